"""Committed Python is checked in the server's interpreter at commit: an
extractor or pipeline function that does not compile, or whose module
imports do not resolve there, is refused (naming the definition, the line
or the import, and the interpreter), and nothing of the commit is stored.
The server logs which Python it uses at start."""

import importlib
import os
import sys
import tempfile

import pytest

from conftest import ThymeServer
from thyme.client import Client, ThymeError

GOOD = '''
from datetime import datetime

import pandas as pd

from thyme.featuresets import extractor, feature, featureset
from thyme.lib import inputs, outputs


@featureset
class Req:
    uid: int


@featureset
class Feats:
    uid: int = feature(Req.uid)
    double: int

    @extractor
    @inputs("uid")
    @outputs("double")
    def compute(cls, ts, uid):
        return pd.DataFrame({"double": uid * 2})
'''

BAD_IMPORT = GOOD.replace("import pandas as pd\n", "import pandas as pd\nimport thyme_no_such_module_zz as nope\n").replace(
    "uid * 2}", "uid * 2 + nope.VALUE - 1}")

# A helper module of the client's project that the shipped code does not
# use: its import fails in the server, and does not matter.
UNUSED_IMPORT = GOOD.replace("import pandas as pd\n", "import pandas as pd\nfrom thyme_no_such_module_zz import VALUE\n")

PIPELINE_BAD_IMPORT = '''
from datetime import datetime

import pandas as pd
import thyme_missing_pipeline_dep as dep

from thyme.connectors import Webhook, source
from thyme.datasets import dataset, field, pipeline
from thyme.lib import inputs

hook = Webhook(name="pp")


@source(hook.endpoint("Ev"), disorder="1d", cdc="append")
@dataset
class Ev:
    uid: int
    v: int
    ts: datetime


@dataset(index=True)
class Out:
    uid: int = field(key=True)
    v: int
    ts: datetime

    @pipeline
    @inputs(Ev)
    def p(cls, ev):
        return ev.filter(lambda df: df["v"] > dep.VALUE - 1).groupby("uid").first()
'''


def load(text, name):
    """Import definitions from a temporary module. The modules the broken
    definitions import exist next to it: on the client, not in the
    server's Python (the case of a feature file written against a laptop's
    environment)."""
    d = tempfile.mkdtemp()
    with open(os.path.join(d, f"{name}.py"), "w") as f:
        f.write(text)
    for client_only in ("thyme_no_such_module_zz", "thyme_missing_pipeline_dep"):
        with open(os.path.join(d, f"{client_only}.py"), "w") as f:
            f.write("VALUE = 1\n")
    sys.path.insert(0, d)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(d)


@pytest.fixture
def server(tmp_path):
    s = ThymeServer(str(tmp_path / "data"), env={"THYME_LOG": "info"})
    yield s
    s.stop()


def test_python_is_checked_at_commit(server):
    client = Client(url=server.control_url, query_url=server.query_url)
    bad = load(BAD_IMPORT, "commit_py_bad_import")
    with pytest.raises(ThymeError) as e:
        client.commit("bad import", featuresets=[bad.Req, bad.Feats])
    msg = str(e.value)
    assert e.value.status == 400, msg
    assert "extractor Feats.compute" in msg and "thyme_no_such_module_zz" in msg, msg
    assert "ModuleNotFoundError" in msg and "VIRTUAL_ENV" in msg and "Python 3" in msg, msg
    # Nothing was stored.
    status, body = server.http("GET", "/api/v1/featuresets")
    assert status == 200 and body["featuresets"] == [], body

    # Code that does not compile cannot come through the SDK (the module
    # would not import); a hand-made payload can.
    from thyme._payload import build_payload
    good = load(GOOD, "commit_py_good")
    payload = build_payload([good.Req, good.Feats], message="raw")
    (ex,) = [e for fs in payload["featuresets"] for e in fs.get("extractors", []) if e["kind"] == "python"]
    ex["source"] = ex["source"].rstrip() + "\n    x = = 1\n"
    status, body = server.http("POST", "/api/v1/commit", payload)
    msg = body["error"]["message"]
    assert status == 400 and body["error"]["code"] == "invalid_definition", body
    assert "compute does not compile" in msg and "line" in msg and "x = = 1" in msg, msg

    pipe = load(PIPELINE_BAD_IMPORT, "commit_py_bad_pipeline")
    with pytest.raises(ThymeError) as e:
        client.commit("bad pipeline", datasets=[pipe.Ev, pipe.Out])
    msg = str(e.value)
    assert "pipeline p (dataset Out)" in msg and "thyme_missing_pipeline_dep" in msg, msg
    status, body = server.http("GET", "/api/v1/datasets")
    assert body["datasets"] == [], body

    # The same definitions without the broken parts commit and serve; so do
    # definitions whose module imports what the server lacks but the
    # shipped code does not use.
    unused = load(UNUSED_IMPORT, "commit_py_unused_import")
    client.commit("unused import", featuresets=[unused.Req, unused.Feats])
    client.commit("good", featuresets=[good.Req, good.Feats])
    out = client.query(inputs=[good.Req.uid], outputs=[good.Feats.double], input_dataframe=__import__("pandas").DataFrame({"Req.uid": [1, 2]}))
    assert list(out["Feats.double"]) == [2, 4], out
