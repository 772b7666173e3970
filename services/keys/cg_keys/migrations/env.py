from sqlmodel import SQLModel

from cg_keys import models  # noqa: F401  (registers the tables)
from cglib.db import run_migrations_env

run_migrations_env(SQLModel.metadata)
