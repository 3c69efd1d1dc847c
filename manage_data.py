#!/usr/bin/env python3
"""Back up, restore and validate a memfs store. `manage_data.py --help` lists the commands.

Run it with the project's Python: `.venv/bin/python manage_data.py backup`. The commands live in
memfs/manage.py; this file only makes them runnable from the repository's top level.
"""

from memfs.manage import main

if __name__ == "__main__":
    main()
