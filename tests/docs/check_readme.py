#!/usr/bin/python3
"""The README's claims, checked against the binaries they describe.

- The "hardneg-server flags" table lists exactly the flags
  `hardneg-server --help` prints, and the "router flag" table exactly those
  of `hardneg-router --help` (names; a row may name several flags).
- "Worked example with the CLI" runs as written: its shell block (with the
  build's binaries on PATH, in a scratch directory holding the .npy inputs
  it names, on a free port instead of 50051), then its Python snippet
  against that server.

  /usr/bin/python3 tests/docs/check_readme.py --build_dir build \\
      [--work_dir /tmp/readme]

Exits 1 on any failure.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from checklist import Checklist  # noqa: E402

CHECKS = Checklist()
check = CHECKS.check



def section(readme, title):
    """The text of `## title` up to the next `## `."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", readme,
                  re.MULTILINE | re.DOTALL)
    if m is None:
        raise SystemExit(f"README has no section '## {title}'")
    return m.group(1)


def table_flags(text, header):
    """Flag names in the first column of the table whose header row starts
    with `| header |`."""
    m = re.search(rf"^\| {re.escape(header)} \|.*?\n((?:\|.*\n)+)", text,
                  re.MULTILINE)
    if m is None:
        raise SystemExit(f"README has no table headed '{header}'")
    names = set()
    for row in m.group(1).splitlines()[1:]:  # after the |---| line
        first = row.split("|")[1]
        names |= set(re.findall(r"--(\w+)", first))
    return names


def help_flags(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    return set(re.findall(r"^  --(\w+)", out, re.MULTILINE)) - {"help",
                                                                 "version"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def code_blocks(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)


def write_inputs(work):
    rng = np.random.default_rng(0)
    n, dim = 300, 16
    np.save(f"{work}/emb.npy", rng.standard_normal((n, dim)).astype(np.float32))
    np.save(f"{work}/ids.npy", np.arange(1000, 1000 + n, dtype=np.int64))
    np.save(f"{work}/labels.npy", np.arange(n, dtype=np.int64) % 5)
    np.save(f"{work}/q.npy", rng.standard_normal((20, dim)).astype(np.float32))
    np.save(f"{work}/pos.npy",
            np.stack([np.arange(1000, 1020), -np.ones(20, np.int64)], 1))
    np.save(f"{work}/qlabels.npy", np.arange(20, dtype=np.int64) % 5)
    return dim


def wait_for_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def run_worked_example(readme, build, work, python_dir):
    text = section(readme, "Worked example with the CLI")
    shell = code_blocks(text, "sh")
    check("the worked example has one shell block", len(shell) == 1,
          len(shell))
    if not shell:
        return
    port = free_port()
    script = shell[0].replace("50051", str(port))
    # The server line ends with `&`: run the block's lines before it, start
    # the server as written, wait for its port, then run the rest.
    lines = re.sub(r"\\\n", " ", script).splitlines()
    server_at = next(i for i, l in enumerate(lines)
                     if l.startswith("hardneg-server") and l.rstrip().endswith("&"))
    before, server, after = (lines[:server_at], lines[server_at].rstrip()[:-1],
                             lines[server_at + 1:])
    write_inputs(work)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PATH=os.pathsep.join(
        [os.path.join(build, "server"), os.path.join(build, "client"),
         os.environ.get("PATH", "")]))

    def sh(cmds, what):
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(cmds)],
                           cwd=work, env=env, capture_output=True, text=True,
                           timeout=120)
        check(f"worked example: {what}", r.returncode == 0,
              r.stdout + r.stderr)
        return r

    sh(before, "make-checkpoint")
    # As written, but /metrics on a free port: the default 9464 may be
    # taken on a shared machine (the gRPC port is a free one already).
    proc = subprocess.Popen(["bash", "-c", f"exec {server} --metrics_port 0"],
                            cwd=work,
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "server.log"), "w"))
    try:
        if not check("worked example: hardneg-server starts as written",
                     wait_for_port(port, proc)):
            return
        r = sh(after, "info and mine")
        ids = np.load(os.path.join(work, "negatives.npy"))
        real = ids[ids != -1]
        check("worked example: negatives.npy holds [20, 8] stored ids "
              "(-1 padded)", ids.shape == (20, 8) and real.size > 0
              and ((real >= 1000) & (real < 1300)).all(), ids)
        check("worked example: info names the checkpoint",
              "run1-step12000" in r.stdout, r.stdout)
        # The Python snippet, with the names it leaves to the trainer.
        snippet = code_blocks(text, "python")
        check("the worked example has one Python block", len(snippet) == 1)
        prelude = (
            "import numpy as np\n"
            "query_emb = np.load('q.npy')\n"
            "pos = np.load('pos.npy')\n"
            "y = np.load('qlabels.npy')\n"
            "step = 3\n")
        code = prelude + snippet[0].replace("50051", str(port)) + (
            "\nassert res.ids.shape == (20, 8), res.ids.shape\n"
            "assert (res.shortfall == 0).all()\n")
        py = subprocess.run(["/usr/bin/python3", "-c", code], cwd=work,
                            env=dict(env, PYTHONPATH=python_dir),
                            capture_output=True, text=True, timeout=60)
        check("worked example: the Python snippet mines", py.returncode == 0,
              py.stdout + py.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build_dir", required=True)
    ap.add_argument("--work_dir")
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    work = args.work_dir or tempfile.mkdtemp(prefix="hardneg_readme_")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()

    for title, header, binary in (
            ("hardneg-server flags", "flag", "server/hardneg-server"),
            ("Sharding: hardneg-router", "router flag",
             "router/hardneg-router")):
        table = table_flags(section(readme, title), header)
        helped = help_flags(os.path.join(build, binary))
        name = os.path.basename(binary)
        check(f"every flag of `{name} --help` is in the README table",
              helped <= table, sorted(helped - table))
        check(f"every flag in the README's {name} table exists",
              table <= helped, sorted(table - helped))

    # The client package with stubs generated into the work dir.
    py = os.path.join(work, "py")
    shutil.copytree(os.path.join(ROOT, "python", "hardneg"),
                    os.path.join(py, "hardneg"),
                    ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    subprocess.run([os.path.join(ROOT, "python", "generate.sh"), py],
                   check=True, stdout=subprocess.DEVNULL)
    example = os.path.join(work, "example")
    os.makedirs(example)
    run_worked_example(readme, build, example, py)
    return CHECKS.finish()


if __name__ == "__main__":
    sys.exit(main())
