"""Secrets never leave the process: every form a storage URL can carry a password in is fed through
`ablate --dry-run`, a failing connection and a finished study, and every output and every file
under the results folder is searched for the secret."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from eolab.__main__ import main
from eolab.runner import spec as spec_module
from eolab.secrets import FORMS, redact, url_secrets
from tests.test_runner import write_spec
from tests.test_runner_study import notebook, study_spec  # noqa: F401  (the module-scoped notebook fixture)

SECRET = "s3cr3tPW"
# The pieces a reader could recognise the password by (a parser splits "s3c@r3tPW" at the '@').
LEAKS = (SECRET, "s3c", "r3tPW", "s3c%40r3tPW", "s3c@r3tPW", "s3c:r3t/PW")

URL_FORMS = {
    "userinfo": f"postgresql://user:{SECRET}@127.0.0.1:1/db",
    "query password=": f"postgresql://127.0.0.1:1/db?user=u&password={SECRET}",
    "query passwd=": f"postgresql://127.0.0.1:1/db?passwd={SECRET}&user=u",
    "query pwd=": f"mysql+pymysql://127.0.0.1:1/db?pwd={SECRET}",
    "query secret=": f"postgresql://127.0.0.1:1/db?secret={SECRET}",
    "query token=": f"postgresql://127.0.0.1:1/db?token={SECRET}",
    "query key=": f"postgresql://127.0.0.1:1/db?key={SECRET}",
    "missing ://": f"postgresql//user:{SECRET}@127.0.0.1:1/db",
    "missing // (scheme:/)": f"postgresql:/user:{SECRET}@127.0.0.1:1/db",
    "unencoded @ in password": "postgresql://user:s3c@r3tPW@127.0.0.1:1/db",
    "unencoded : and / in password": "postgresql://user:s3c:r3t/PW@127.0.0.1:1/db",
    "percent-encoded @ in password": "postgresql://user:s3c%40r3tPW@127.0.0.1:1/db",
    "driver in scheme": f"postgresql+psycopg2://user:{SECRET}@127.0.0.1:1/db",
}


def assert_clean(text: str, where: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked in {where}: {text[:2000]}"


def assert_folder_clean(folder: Path) -> int:
    """Search every file under `folder` (text or binary) for the secret; return how many files."""
    files = [f for f in folder.rglob("*") if f.is_file()] if folder.exists() else []
    for f in files:
        assert_clean(f.read_bytes().decode("utf-8", errors="replace"), str(f))
    return len(files)


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_redact_covers_every_url_form(form: str) -> None:
    url = URL_FORMS[form]
    assert_clean(redact(url), f"redact({url!r})")
    # the password as a driver might quote it (whole, decoded, or the part after an unencoded '@')
    password = next(p for p in (SECRET, "s3c@r3tPW", "s3c:r3t/PW", "s3c%40r3tPW") if p in url)
    for fragment in (password, unquote(password), password.split("@")[-1] + "@127.0.0.1", f"'{password}'"):
        assert_clean(redact(f"error near {fragment}", url_secrets(url)), fragment)
    assert "127.0.0.1" in redact(url)  # the host stays visible: the message must still say where


def test_redact_keeps_ordinary_text() -> None:
    for text in ("sqlite:////a/b.db journal:///x.log", "mask_ratio=0.5 at 12:30", "git@github.com:org/repo",
                 "postgresql://u@host/db", "https://sqlalche.me/e/20/e3q8"):
        assert redact(text) == text
    assert redact("host=h password=pw dbname=d") == "host=h password=*** dbname=d"
    assert redact("{'password': 'pw'}") == "{'password': '***'}"
    assert len(FORMS) == 7


ENV_FORM = {"${VAR} in userinfo": "postgresql://user:${EOLAB_TEST_SECRET_PW}@127.0.0.1:1/db",
            "${VAR} as query parameter": "postgresql://127.0.0.1:1/db?user=u&password=${EOLAB_TEST_SECRET_PW}"}


@pytest.mark.parametrize("form", list(URL_FORMS) + list(ENV_FORM))
def test_dry_run_and_failing_connection_show_no_secret(
    form: str, tmp_path: Path, notebook: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = tmp_path / "results"
    monkeypatch.setenv("EOLAB_TEST_SECRET_PW", SECRET)
    url = {**URL_FORMS, **ENV_FORM}[form]
    spec = write_spec(tmp_path / "s.yaml", study_spec(notebook, extra_study=f"  storage: '{url}'\n"))
    # a failing connection (nothing listens on port 1, or the URL does not parse): exit 2, named, no secret
    assert main(["ablate", str(spec), "--results-root", str(results)]) == 2
    out = capsys.readouterr()
    assert "study.storage" in out.err
    assert_clean(out.out + out.err, "ablate against a closed port")
    assert not results.exists() or assert_folder_clean(results) == 0
    # --dry-run with a reachable database (no server in tests): the storage is listed, redacted
    monkeypatch.setattr(spec_module, "check_rdb_reachable", lambda *args: None)
    code = main(["ablate", str(spec), "--dry-run", "--results-root", str(results)])
    out = capsys.readouterr()
    assert_clean(out.out + out.err, "--dry-run")
    if code == 0:
        assert "storage" in out.out and "127.0.0.1" in out.out
    assert_folder_clean(results)


@pytest.mark.parametrize(
    "storage",
    ["sqlite:///{tmp}/nodir/study.db?password=" + SECRET, "sqlite+pysqlite://user:" + SECRET + "@/{tmp}/study.db",
     "sqlite//user:" + SECRET + "@{tmp}/study.db"],
)
def test_unusable_sqlite_storage_shows_no_secret(
    storage: str, tmp_path: Path, notebook: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    spec = write_spec(tmp_path / "s.yaml", study_spec(notebook, extra_study=f"  storage: '{storage.format(tmp=tmp_path)}'\n"))
    assert main(["ablate", str(spec), "--dry-run", "--results-root", str(tmp_path / "results")]) == 2
    out = capsys.readouterr()
    assert "study.storage" in out.err
    assert_clean(out.out + out.err, storage)


@pytest.mark.slow  # two trials, each a kernel start
def test_finished_study_writes_no_secret(
    tmp_path: Path, notebook: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """A real (sqlite) study whose URL carries the password as a query parameter, run to the end:
    spec.json, trials.json/csv, every run folder and the printed output hold no secret."""
    url = f"sqlite:///{tmp_path / 'study.db'}?user=u&password={SECRET}"
    spec = write_spec(
        tmp_path / "s.yaml",
        study_spec(notebook, n_trials=2, extra_study=f"  storage: '{url}'\n", pruner="none",
                   space="    x: {type: float, low: -1.0, high: 1.0}\n")
        .replace("  intermediate: score\n", "")
        .replace("name: toy\n", "name: toy\nbase:\n  fail_below: 0.0\n"),
    )
    results = tmp_path / "results"
    code = main(["ablate", str(spec), "--results-root", str(results)])
    out = capsys.readouterr()
    assert_clean(out.out + out.err, "ablate output")
    assert code in (0, 1), out.err  # a trial with x < 0 fails on purpose: its error is written too
    assert (results / "toy" / "spec.json").is_file() and (results / "toy" / "trials.json").is_file()
    assert "study.db" in (results / "toy" / "spec.json").read_text()
    assert assert_folder_clean(results) >= 5


def test_redacting_twice_changes_nothing() -> None:
    for url in URL_FORMS.values():
        once = redact(f"{url}: cannot connect")
        assert redact(once) == once and once.endswith(": cannot connect")
