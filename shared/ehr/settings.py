"""What a site chooses when it reads its records, as the command line shows it: the weakest
code-mapping relation it accepts (:mod:`shared.ehr.codemap`) and the environment variable that
holds its database password (:mod:`shared.ehr.cdm_connection`).

Importing this module imports nothing else (no pandas, no database driver), so a help text
or a default can name these without loading the readers (issue 23).
"""

from __future__ import annotations

from typing import Literal

#: strongest first
RELATIONS = ("exact", "narrower", "broader", "related")
Accept = Literal["exact", "narrower", "broader", "related"]
ACCEPT: tuple[str, ...] = RELATIONS  # the weakest relation a site accepts; "narrower" by default
DEFAULT_ACCEPT: Accept = "narrower"

DEFAULT_PASSWORD_ENV = "RAREGRAPH_CDM_PASSWORD"
