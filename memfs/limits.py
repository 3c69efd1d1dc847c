"""The size limits every way into a store shares: the API, the CLI, the Python API and hand-dropped files.

One table, one place. A document over a limit is refused the same way whichever way it comes in: `add`
and `update` raise InvalidDocumentError (HTTP 422, exit 3); a file in data/memories/ is reported as an
invalid file with the limit in its reason, never indexed, and a last good version of it stays served
(docs/storage.md, "Invalid files"). Nothing is ever truncated silently (issue #14, finding 4: one
5.5 MB hand-dropped file froze the owner for 7 s).

| constant              | value             | what it bounds                                                   |
|-----------------------|-------------------|------------------------------------------------------------------|
| `MAX_CONTENT_CHARS`   | 262,144 (256 Ki)  | a memory's `content`, in characters (the HTTP API's old cap)     |
| `MAX_FILE_BYTES`      | 4,194,304 (4 MiB) | a memory file on disk; a bigger file is not even read            |
| `EMBED_INPUT_CHARS`   | 16,384            | the content prefix handed to the model (it reads 256 tokens)     |
| `SNIPPET_CHARS`       | 300               | a suggested bound for a search hit's snippet (full text: `get`)  |

`MAX_FILE_BYTES` leaves room for the largest content (256 Ki characters of 4-byte UTF-8 is 1 MiB) and
its JSON escapes; the store checks the bytes it writes against it too, so a file memfs wrote is never
refused when read back. `EMBED_INPUT_CHARS` is not a limit on what is stored: all-MiniLM-L6-v2 reads at
most 256 word pieces (about 1,000–1,500 characters of English), so tokenizing more is wasted work;
16 Ki characters hold more than 256 word pieces of any ordinary text.
"""

MAX_CONTENT_CHARS = 256 * 1024
MAX_FILE_BYTES = 4 * 1024 * 1024
EMBED_INPUT_CHARS = 16 * 1024
SNIPPET_CHARS = 300
