"""socker's main job end to end, offline: start a local registry, push a small two-layer
busybox image into it with skopeo, pull it with socker, look inside, run it as a container,
pull again (nothing is downloaded), edit the image and push it back as one layer, check it
with skopeo, and build a bash+ls base image from host binaries and run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import oci  # noqa: E402
from tests.support.registry import running_registry  # noqa: E402


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def sh(*args: str, env=None) -> None:
    print("$ " + " ".join(args), flush=True)
    subprocess.run(args, check=True, env=env)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="socker-demo-"))
    home = work / "socker-home"
    env = dict(os.environ, SOCKER_HOME=str(home))
    try:
        step("starting a local docker-registry")
        with running_registry(work / "registry") as reg:
            print(f"registry at {reg.url}")
            step("building a two-layer busybox image and pushing it with skopeo")
            layers = [
                oci.busybox_entries(),
                [
                    oci.dir("etc", 0o755),
                    oci.file("etc/motd", b"hello from a flat socker image\n"),
                    oci.whiteout("bin/false"),
                ],
            ]
            oci.build_layout(
                work / "layout",
                "1",
                layers,
                config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
            )
            reg.push_layout(work / "layout", "1", "demo/busybox:1")
            ref = f"{reg.host}/demo/busybox:1"

            step(f"socker pull {ref}")
            t = time.monotonic()
            sh("socker", "pull", ref, env=env)
            print(f"(cold pull: {time.monotonic() - t:.2f}s)")
            image = home / "images" / reg.host / "demo/busybox/1"

            step("the image is a plain directory")
            sh("ls", "-l", str(image), str(image / "etc"))
            sh("cat", str(image / "etc/motd"))
            if os.geteuid() == 0:
                step("run it as a container: namespaces, pivot_root, the command as PID 1")
                sh(
                    "socker",
                    "run",
                    "--rm",
                    ref,
                    "sh",
                    "-c",
                    "echo I am PID $$ on host $(hostname); cat /etc/motd; ls /proc | grep -c '^[0-9]'",
                    env=env,
                )
            step("pull again: nothing is downloaded, the image is up to date")
            t = time.monotonic()
            sh("socker", "pull", ref, env=env)
            print(f"(warm pull: {time.monotonic() - t:.2f}s)")
            step("metadata lives beside the store, not inside the image")
            sh("ls", str(home / "meta" / reg.host / "demo/busybox/1"))

            mine = f"{reg.host}/demo/mine:1"
            step("edit a copy of the image with ordinary tools and push it as one layer")
            sh("socker", "tag", ref, mine, env=env)
            (home / "images" / reg.host / "demo/mine/1/etc/motd").write_text("edited with a text editor\n")
            sh("socker", "push", mine, env=env)
            step("skopeo, an independent client, reads what socker pushed")
            sh("skopeo", "inspect", "--tls-verify=false", f"docker://{mine}")

            base = f"{reg.host}/demo/bash-ls:1"
            step("a base image with only bash and ls, from this machine's binaries")
            sh("socker", "new", base, env=env)
            sh("socker", "add", base, "/usr/bin/bash", "/bin/ls", env=env)
            sh("socker", "push", base, env=env)
            if os.geteuid() == 0:
                sh(
                    "socker",
                    "run",
                    "--rm",
                    base,
                    "/usr/bin/bash",
                    "-c",
                    "echo bash $BASH_VERSION; ls /",
                    env=env,
                )
            sh("socker", "images", env=env)
        print("\ndemo finished: everything above ran against a registry on this machine")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
