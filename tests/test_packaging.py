"""The release: the wheel and sdist, their metadata, and an install the way README says.

The wheel and the sdist are built once per run (``python -m build``, as ``make dist`` does).
Then, for each supported Django, a fresh virtualenv on a Python that Django supports gets that
Django, a project made by ``django-admin startproject``, and README's "Install into your
project" section followed word for word: its ``sh`` blocks are run command by command
(``pip install django-circuitbreaker-app[...]`` takes the built wheel instead of the index,
with the same extras) and each ``python`` block is appended to the file the text before it
names ("Append to your project's `settings.py`"). If README changes, this test follows it,
or says which step it cannot follow. The project passes ``check``, README's last command
prints what README says it prints (a circuit tripped into ``CircuitOpenError``), and the
project runs the wheel, not the checkout, on the Django it had before the install.

Needs PyPI (or pip's cache) and Python 3.11, 3.12 and 3.13 (pyenv's, or on ``PATH``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tarfile
import textwrap
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

#: What the project runs after README's steps: its Django, and where the package came from.
WHERE_SCRIPT = """
import circuitbreaker_app, django
print("django", django.get_version())
print("package", circuitbreaker_app.__file__)
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
        # The demo's Redis broker (tutorial: CELERY_BROKER_URL=redis://…) needs kombu[redis].
        'celery[redis]>=5.4; extra == "demo"',
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


def readme_steps(readme: str) -> list[tuple[str, str, str]]:
    """The fenced blocks of README's install section, in order: (prose before, language, code).

    Blocks may be indented (inside a numbered list); their code is dedented.
    """
    start = readme.index(README_SECTION)
    end = readme.find("\n## ", start + len(README_SECTION))
    section = readme[start : end if end != -1 else None]
    fence = re.compile(r"^([ \t]*)```(\w+)\n(.*?)^\1```[ \t]*$", flags=re.M | re.S)
    steps, prose_from = [], 0
    for match in fence.finditer(section):
        code = textwrap.dedent(match.group(3))
        steps.append((section[prose_from : match.start()], match.group(2), code))
        prose_from = match.end()
    return steps


def shell_commands(code: str) -> list[list[str]]:
    """A sh block's commands: one per line, or several lines while a quote is open."""
    commands, pending = [], ""
    for line in code.splitlines(keepends=True):
        pending += line
        try:
            args = shlex.split(pending, comments=True)
        except ValueError:  # "No closing quotation": the command goes on
            continue
        if args:
            commands.append(args)
        pending = ""
    assert not pending.strip(), f"unterminated command in README: {pending!r}"
    return commands


def wheel_requirement(arg: str, wheel: Path) -> str:
    """``django-circuitbreaker-app[x]`` -> ``/path/to/the.whl[x]``; other args unchanged."""
    match = re.fullmatch(re.escape(DISTRIBUTION) + r"(\[[\w,\s-]+\])?", arg)
    return f"{wheel}{match.group(1) or ''}" if match else arg


def append_snippet(prose: str, code: str, project: Path) -> None:
    """A python block that README says to append to a file ("Append to ... `settings.py`")."""
    target = re.findall(r"Append to [^`]*`(\w+\.py)`", prose)
    assert target, f"README's python block does not say which file it goes to: {prose!r}"
    path = project / "mysite" / target[-1]
    assert path.exists(), f"README edits {target[-1]}, which startproject did not make"
    path.write_text(path.read_text() + "\n\n" + code)


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
    commands = [args for _, lang, code in steps if lang == "sh" for args in shell_commands(code)]
    assert [DISTRIBUTION] in [args[2:] for args in commands if args[:2] == ["pip", "install"]]
    assert ["python", "manage.py", "migrate"] in commands
    targets = [
        re.findall(r"Append to [^`]*`(\w+\.py)`", prose)
        for prose, lang, _ in steps
        if lang == "python"
    ]
    assert [target[-1:] for target in targets] == [["settings.py"], ["urls.py"]]


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
    run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"Django=={django_series}.*"],
        env=env,
    )
    run(["django-admin", "startproject", "mysite"], cwd=tmp_path, env=env)
    project = tmp_path / "mysite"

    outputs = []
    for prose, lang, code in readme_steps((ROOT / "README.md").read_text()):
        if lang == "python":
            append_snippet(prose, code, project)
            continue
        assert lang == "sh", f"README's install section has a {lang} block this test cannot run"
        for args in shell_commands(code):
            assert args[0] in ("pip", "python"), f"cannot follow README's command {args!r}"
            if args[0] == "pip":
                args = [str(venv / "bin" / "python"), "-m", *args]
                args = [wheel_requirement(arg, wheel) for arg in args]
                assert str(wheel) in args, f"{args!r} does not install the package"
            outputs.append((args, run(args, cwd=project, env=env).stdout))

    checked = run(["python", "manage.py", "check"], cwd=project, env=env)
    assert "System check identified no issues" in checked.stdout
    # README says what its last command prints; it does.
    readme = (ROOT / "README.md").read_text()
    section_end = readme.find("\n## ", readme.index(README_SECTION) + len(README_SECTION))
    promised = re.findall(
        r"It prints `([^`]+)`", readme[: section_end if section_end > 0 else None]
    )
    assert promised, "README's install section no longer says what the trip prints"
    assert promised[-1] in outputs[-1][1], outputs[-1][1]
    tripped = run(["python", "-c", WHERE_SCRIPT], cwd=project, env=env)
    said = dict(line.split(" ", 1) for line in tripped.stdout.splitlines())
    assert said["django"].startswith(f"{django_series}.")  # the install kept this Django
    assert said["package"].startswith(str(venv / "lib")), said  # the wheel, not the checkout
