from cglib.db import run_migrations_env
from cg_keys import models  # noqa: F401  (registers the tables)
from sqlmodel import SQLModel

run_migrations_env(SQLModel.metadata)
