"""Real Iceberg tables for the tests, written with pyiceberg (PyPI ``pyiceberg``).

A catalog is pyiceberg's ``SqlCatalog`` on a sqlite file with a local
``file://`` warehouse, all inside one directory (a test's tmp_path)::

    catalog, uri, warehouse = make_catalog(tmp_path)
    # uri       == "sqlite:///<dir>/catalog.db"   the catalog DB
    # warehouse == "file://<dir>/warehouse"       tables at <warehouse>/<ns>/<table>
    #                                             ("a.b.t" -> <warehouse>/a.b/t)
    table = create_table(catalog, "ns.users", pa.schema([...]))
    append(table, [{"uid": 1, "name": "a"}, ...])
    overwrite(table, [{"uid": 9, "name": "z"}])
    delete(table, "uid = 2")

Every call that changes the table commits once: one new
``<n>-<uuid>.metadata.json``, and the catalog row's ``metadata_location``
moves to it. What snapshots a commit adds
(pyiceberg 0.12; deletes are always copy-on-write, no delete files):

* ``append``: one snapshot, operation "append" (new data files only).
* ``overwrite`` (whole table): "delete" (drops every file) then "append".
  With a filter: "delete" for files wholly matched and/or "overwrite" for
  files rewritten without the matched rows, then "append".
* ``delete``: "delete" when whole files are dropped, "overwrite" when files
  are rewritten, or both; no snapshot (and a warning) when nothing matches.

The ``Table`` passed in is refreshed in place, so it can be written again.
Rows are dicts converted with the table's own Arrow schema (field order,
nullability, microsecond timestamps); a missing key is written as null.
"""

import os

import pyarrow as pa

CATALOG_NAME = "default"


def make_catalog(directory, name: str = CATALOG_NAME):
    """(catalog, uri, warehouse): a fresh SqlCatalog named `name` on
    `<directory>/catalog.db`, with its warehouse at `<directory>/warehouse`."""
    from pyiceberg.catalog.sql import SqlCatalog

    directory = os.path.abspath(str(directory))
    os.makedirs(os.path.join(directory, "warehouse"), exist_ok=True)
    uri = f"sqlite:///{directory}/catalog.db"
    warehouse = f"file://{directory}/warehouse"
    catalog = SqlCatalog(name, uri=uri, warehouse=warehouse)
    return catalog, uri, warehouse


def create_table(catalog, identifier: str, schema: pa.Schema, **kwargs):
    """Create table `identifier` ("ns.table", or "a.b.table" for a nested
    namespace), creating its namespace if needed. `schema` is a pyarrow
    schema (or a pyiceberg Schema); extra kwargs go to `catalog.create_table`
    (e.g. partition_spec, properties)."""
    namespace = tuple(identifier.split(".")[:-1])
    if not namespace:
        raise ValueError(f"table identifier needs a namespace: {identifier!r}")
    catalog.create_namespace_if_not_exists(namespace)
    return catalog.create_table(identifier, schema=schema, **kwargs)


def _arrow(table, rows: list[dict]) -> pa.Table:
    schema = table.schema().as_arrow()
    return pa.Table.from_pylist(rows, schema=schema)


def append(table, rows: list[dict]):
    """Append `rows` (one new data file, one "append" snapshot)."""
    table.append(_arrow(table, rows))
    return table


def overwrite(table, rows: list[dict], overwrite_filter=None):
    """Replace the table's rows (all of them, or those matching
    `overwrite_filter`) with `rows`."""
    from pyiceberg.expressions import AlwaysTrue

    table.overwrite(_arrow(table, rows), overwrite_filter=overwrite_filter or AlwaysTrue())
    return table


def delete(table, filter_expr):
    """Delete the rows matching `filter_expr`: a pyiceberg expression or a
    string such as "uid = 2" or "uid in (1, 3)"."""
    table.delete(delete_filter=filter_expr)
    return table
