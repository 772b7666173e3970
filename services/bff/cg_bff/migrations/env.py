from sqlmodel import SQLModel

import cg_bff.models  # noqa: F401  (imports every models module: registers the tables)
from cglib.db import run_migrations_env

run_migrations_env(SQLModel.metadata)
