"""The release: the wheel and sdist, their metadata, and an install the way README says.

The wheel and the sdist are built once per run (``python -m build``, as ``make dist`` does).
Then, for each supported Django, a fresh virtualenv on a Python that Django supports gets that
Django, a project made by ``django-admin startproject``, and README's "Install into your
project" section followed word for word: its ``sh`` blocks are run line by line (``pip install
django-circuitbreaker-app[...]`` takes the built wheel instead of the index, with the same
extras) and its ``python`` blocks are applied to the file their first line names (``[...,
"x"]`` means: add ``"x"`` to the list the file already has). If README changes, this test
follows it, or says which line it cannot follow. The project then passes ``check`` and trips
a circuit into ``CircuitOpenError``, with the wheel, not the checkout, on its path, and the
Django it had before the install.

Needs PyPI (or pip's cache) and Python 3.11, 3.12 and 3.13 (pyenv's, or on ``PATH``).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import services_required

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "django-circuitbreaker-app"
#: Each supported Django series, and the Python its install is tried on.
DJANGO_PYTHONS = {"5.2": "3.11", "6.0": "3.12", "6.1": "3.13"}
README_SECTION = "## Install into your project"

TRIP_SCRIPT = """
import circuitbreaker_app, django
from django.conf import settings
from circuitbreaker_app import CircuitOpenError, breaker

print("django", django.get_version())
print("package", circuitbreaker_app.__file__)
name = next(iter(settings.CIRCUITBREAKER["CIRCUITS"]))

def fail():
    raise ConnectionError("upstream down")

for calls in range(1, 1001):
    try:
        breaker(name).call(fail)
    except CircuitOpenError as exc:
        print("rejected", exc.circuit, "after", calls - 1, "failures")
        break
    except ConnectionError:
        pass
"""


# -- building --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Path:
    """The folder holding the wheel and the sdist built from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    return out


@pytest.fixture(scope="session")
def wheel(dist) -> Path:
    (found,) = dist.glob("*.whl")
    return found


@pytest.fixture(scope="session")
def sdist(dist) -> Path:
    (found,) = dist.glob("*.tar.gz")
    return found


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    completed = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert completed.returncode == 0, (
        f"{shlex.join(args)} exited {completed.returncode}\n"
        f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
    )
    return completed


def tracked_package_files() -> set[str]:
    """The files of circuitbreaker_app/ under version control (what a release must carry)."""
    out = run(["git", "ls-files", "circuitbreaker_app"], cwd=ROOT).stdout
    return {line for line in out.splitlines() if line}


# -- what the archives hold ------------------------------------------------------------------


def test_the_wheel_holds_every_file_of_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {name for name in names if name.startswith("circuitbreaker_app/")}
    tracked = tracked_package_files()
    assert tracked - package == set()
    # Templates, static files, migrations, translations and the typing marker among them:
    for folder in ("templates/", "static/", "migrations/0001_initial.py", "py.typed"):
        assert any(name.startswith(f"circuitbreaker_app/{folder}") for name in package), folder
    locale = {name for name in tracked if "/locale/" in name}
    assert locale <= package
    # Nothing of the checkout's other folders.
    (dist_info,) = {name.split("/")[0] for name in names} - {"circuitbreaker_app"}
    assert re.fullmatch(r"django_circuitbreaker_app-[\w.]+\.dist-info", dist_info)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_the_sdist_holds_the_package_readme_license_and_changelog(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml"} <= names
    assert tracked_package_files() - names == set()


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def test_the_metadata_says_what_is_supported(wheel):
    meta = wheel_metadata(wheel)
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta["Requires-Python"] == ">=3.11"
    requires = meta.get_all("Requires-Dist")
    assert "django<6.2,>=5.2" in [r.lower() for r in requires]
    # Celery is an extra, not a dependency.
    assert [r for r in requires if r.lower().startswith("celery")] == [
        'celery>=5.4; extra == "celery"',
        'celery>=5.4; extra == "dev"',
        'celery>=5.4; extra == "demo"',
    ]
    classifiers = meta.get_all("Classifier")
    for series in DJANGO_PYTHONS:
        assert f"Framework :: Django :: {series}" in classifiers
    for python in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {python}" in classifiers
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip() == (ROOT / "README.md").read_text().strip()


def test_twine_accepts_both_archives(wheel, sdist):
    run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)])


def test_the_changelog_keeps_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    assert releases[0] == "Unreleased"
    assert "0.1.0" in releases
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None and version.group(1) in releases


# -- README's install section, followed word for word ----------------------------------------


def readme_steps(readme: str) -> list[tuple[str, str]]:
    """The fenced blocks of README's install section, in order, as (language, text)."""
    start = readme.index(README_SECTION)
    end = readme.find("\n## ", start + len(README_SECTION))
    section = readme[start : end if end != -1 else None]
    return re.findall(r"^```(\w+)\n(.*?)^```", section, flags=re.M | re.S)


def wheel_requirement(arg: str, wheel: Path) -> str:
    """``django-circuitbreaker-app[x]`` -> ``/path/to/the.whl[x]``; other args unchanged."""
    match = re.fullmatch(re.escape(DISTRIBUTION) + r"(\[[\w,\s-]+\])?", arg)
    return f"{wheel}{match.group(1) or ''}" if match else arg


def apply_snippet(code: str, project: Path) -> None:
    """Apply a python block whose first line names its file (``# settings.py``)."""
    first, _, body = code.partition("\n")
    target = re.fullmatch(r"#\s*(?:\w+/)?(\w+\.py)\b.*", first.strip())
    assert target, f"README's python block must start with '# <file>.py', not {first!r}"
    path = project / "mysite" / target.group(1)
    assert path.exists(), f"README edits {target.group(1)}, which startproject did not make"
    lines = []
    for node in ast.parse(body).body:
        source = ast.get_source_segment(body, node)
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.List)
            and node.value.elts
            and isinstance(node.value.elts[0], ast.Constant)
            and node.value.elts[0].value is Ellipsis
        ):
            # NAME = [..., a, b]: the project's own list, with a and b added.
            (name,) = node.targets
            rest = [ast.get_source_segment(body, elt) for elt in node.value.elts[1:]]
            source = f"{ast.unparse(name)} += [{', '.join(rest)}]"
        assert "..." not in source, f"cannot follow README's '...' in: {source}"
        lines.append(source)
    path.write_text(path.read_text() + "\n\n# From README\n" + "\n".join(lines) + "\n")


def find_python(version: str) -> str | None:
    """An interpreter for ``3.X``: pyenv's newest patch release, else ``python3.X`` on PATH."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [str(p) for p in sorted(root.glob(f"versions/{version}.*/bin/python{version}"))]
    candidates = [*reversed(candidates), f"python{version}"]
    for candidate in candidates:
        try:
            if subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
                return candidate
        except OSError:
            continue
    return None


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a shell in the new virtualenv: nothing of this test run."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CB_", "DJANGO_", "PYTHON", "VIRTUAL_ENV", "PYTEST", "COV_"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_readme_install_section_is_followable():
    """The parsing this test relies on, on README as it is (fast, no install)."""
    steps = readme_steps((ROOT / "README.md").read_text())
    commands = [line for lang, text in steps if lang == "sh" for line in text.splitlines()]
    assert any(DISTRIBUTION in line and line.startswith("pip install") for line in commands)
    assert any("manage.py migrate" in line for line in commands)
    assert any(lang == "python" and "circuitbreaker_app" in text for lang, text in steps)


@pytest.mark.parametrize("django_series", list(DJANGO_PYTHONS))
def test_install_into_a_new_project_as_readme_says(django_series, wheel, tmp_path):
    python = find_python(DJANGO_PYTHONS[django_series])
    if python is None:
        message = f"Python {DJANGO_PYTHONS[django_series]} is not installed"
        if services_required():
            pytest.fail(f"{message} and REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(message)
    venv = tmp_path / "venv"
    run([python, "-m", "venv", str(venv)])
    env = clean_env(venv)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run([*pip, f"Django=={django_series}.*"], env=env)
    run(["django-admin", "startproject", "mysite"], cwd=tmp_path, env=env)
    project = tmp_path / "mysite"

    for lang, text in readme_steps((ROOT / "README.md").read_text()):
        if lang == "python":
            apply_snippet(text, project)
            continue
        assert lang == "sh", f"README's install section has a {lang} block this test cannot run"
        for line in text.splitlines():
            args = shlex.split(line, comments=True)
            if not args:
                continue
            assert args[0] in ("pip", "python"), f"cannot follow README's command {line!r}"
            if args[0] == "pip":
                args = [str(venv / "bin" / "python"), "-m", *args]
                args = [wheel_requirement(arg, wheel) for arg in args]
                assert str(wheel) in " ".join(args), f"{line!r} does not install the package"
            run(args, cwd=project, env=env)

    checked = run(["python", "manage.py", "check"], cwd=project, env=env)
    assert "System check identified no issues" in checked.stdout
    tripped = run(["python", "manage.py", "shell", "-c", TRIP_SCRIPT], cwd=project, env=env)
    said = dict(line.split(" ", 1) for line in tripped.stdout.splitlines() if " " in line)
    assert said["django"].startswith(f"{django_series}.")  # the install kept this Django
    assert said["package"].startswith(str(venv / "lib")), said  # the wheel, not the checkout
    assert re.fullmatch(r"\w+ after \d+ failures", said["rejected"]), said
