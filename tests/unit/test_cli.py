"""The command line: help, errors, and where settings come from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def socker(*args, cwd=None, env=None):
    e = dict(os.environ)
    e.pop("SOCKER_HOME", None)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "socker_lib.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=e,
        timeout=60,
    )


def test_help_lists_pull_and_hides_shell_runner_flags():
    out = socker("--help").stdout
    assert "pull" in out and "--debug" in out
    assert "--pty" not in out and "--prompt-for-sudo-password" not in out


def test_task_help_even_though_ref_is_positional():
    out = socker("pull", "--help")
    assert out.returncode == 0 and "--platform" in out.stdout and "Examples" in out.stdout


def test_bad_reference_is_one_line_and_exit_2():
    out = socker("pull", "Not/Valid")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[0].startswith("error: invalid repository name component 'Valid'")
    assert "Traceback" not in out.stderr


def test_debug_shows_traceback():
    out = socker("--debug", "pull", "Not/Valid")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_settings_from_project_yaml_env_and_flags(tmp_path):
    from socker_lib.settings import Settings

    (tmp_path / "socker.yaml").write_text(f"home: {tmp_path / 'from-yaml'}\n")
    probe = (
        "from socker_lib.cli import program; from socker_lib.settings import Settings;"
        "program.run(['socker','--list'], exit=False);"
        "print(Settings.load(program.config).home)"
    )

    def run(env):
        proc = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={
                **{k: v for k, v in os.environ.items() if k != "SOCKER_HOME"},
                **env,
                "PYTHONPATH": str(REPO),
            },
        )
        return proc.stdout.strip().splitlines()[-1]

    assert run({}) == str(tmp_path / "from-yaml")
    assert run({"SOCKER_HOME": str(tmp_path / "from-env")}) == str(tmp_path / "from-env")
    assert Settings.load({"home": "/x"}, home="/y").home == Path("/y")
    assert Settings.load(None, insecure_registries="a:1, b:2").insecure_registries == ("a:1", "b:2")


def test_unreachable_registry_exit_code_and_hint():
    out = socker("pull", "127.0.0.1:1/a/b:c")
    assert out.returncode == 1
    assert "cannot reach registry 127.0.0.1:1" in out.stderr and "hint:" in out.stderr


def test_run_fast_path_imports_nothing_heavy(tmp_path):
    """``socker run`` must start as fast as the runtime: no invoke, requests, rich or fabric."""
    probe = (
        "import os, sys, runpy; sys.argv = ['socker', 'run', '--help']; os._exit = sys.exit\n"
        "try:\n    runpy.run_module('socker_lib.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('invoke', 'requests', 'rich', 'fabric', 'paramiko', 'urllib3', 'dataclasses'))\n"
        "print('HEAVY', heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SOCKER_HOME"}
    env["SOCKER_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env)
    assert "Usage: socker run" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout


def test_a_real_run_imports_nothing_heavy(tmp_path):
    from tests.conftest import needs_root

    needs_root()  # a real container start
    (tmp_path / "images/localhost/x/y/1").mkdir(parents=True)
    probe = (
        "import os, sys, runpy; sys.argv = ['socker', 'run', 'localhost/x/y:1', '/no/such']; os._exit = sys.exit\n"
        "try:\n    runpy.run_module('socker_lib.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    print('CODE', e.code)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('invoke', 'requests', 'rich', 'fabric', 'paramiko', 'urllib3', 'dataclasses'))\n"
        "print('HEAVY', heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SOCKER_HOME"}
    env["SOCKER_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env)
    assert "CODE 127" in out.stdout, (out.stdout, out.stderr)  # the container started, the command did not
    assert "HEAVY []" in out.stdout, out.stdout


def test_help_of_variadic_tasks_keeps_its_texts():
    for task, text in (("add", "host file to copy in"), ("exec", "container id (a unique prefix) or name")):
        out = socker(task, "--help")
        assert out.returncode == 0 and text in out.stdout, out.stdout
