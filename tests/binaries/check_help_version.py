#!/usr/bin/python3
"""--help and --version of every binary, and the hardneg_build_info metric.

For hardneg-server, hardneg-router and hardneg:
- `--help` exits 0 on stdout; for the servers it lists every flag their
  source defines (ABSL_FLAG in server/server_flags.cc, server/
  common_flags.cc, router/main.cc), each with "(default: VALUE)" and no
  empty or ';' default;
- `--version` (and `hardneg version`) exits 0 and prints
  "<name> <version> (revision <rev>, <type> build)", the version being
  CMakeLists.txt's project VERSION and, in a git checkout, the revision a
  commit of this repository;
- a running hardneg-server and hardneg-router export
  hardneg_build_info{version,revision} 1 with the same values.

  /usr/bin/python3 tests/binaries/check_help_version.py --build_dir build
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "monitoring"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import monitoring_common as mc  # noqa: E402  (Server, write_checkpoint)
from checklist import Checklist  # noqa: E402

CHECKS = Checklist()
check = CHECKS.check



def defined_flags(*sources):
    names = set()
    for src in sources:
        with open(os.path.join(ROOT, src)) as f:
            names |= set(re.findall(r"ABSL_FLAG\([^,]+,\s*(\w+)\s*,", f.read()))
    return names


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(hardneg VERSION (\S+)", f.read()).group(1)


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def check_version(name, cmd, version):
    r = run(cmd)
    line = r.stdout.strip()
    m = re.fullmatch(
        rf"{re.escape(name)} (\S+) \(revision (\S+), (\w+) build\)", line)
    check(f"{' '.join(os.path.basename(c) for c in cmd)}: exit 0, one line",
          r.returncode == 0 and m is not None, (r.returncode, line, r.stderr))
    if m is None:
        return None
    check(f"{name}: version {m.group(1)} is CMakeLists.txt's {version}",
          m.group(1) == version, m.group(1))
    revision = m.group(2)
    if os.path.isdir(os.path.join(ROOT, ".git")):
        commit = revision.removesuffix("-dirty")
        known = subprocess.run(["git", "-C", ROOT, "cat-file", "-e",
                                f"{commit}^{{commit}}"],
                               capture_output=True).returncode == 0
        check(f"{name}: revision {revision} is a commit of this checkout",
              known, revision)
    return m.group(1), revision


def check_help(name, binary, sources):
    r = run([binary, "--help"])
    check(f"{name} --help: exit 0, on stdout", r.returncode == 0
          and r.stdout, (r.returncode, r.stderr[-500:]))
    listed = dict(re.findall(r"^  --(\w+) \(default: (.*)\)$", r.stdout,
                             re.MULTILINE))
    want = defined_flags(*sources)
    check(f"{name} --help lists all {len(want)} flags its source defines",
          want <= set(listed), sorted(want - set(listed)))
    bad = {k: v for k, v in listed.items() if v in ("", ";")}
    check(f"{name} --help: every default shown", not bad, bad)
    check(f"{name} --help: no Abseil file headers",
          "Flags from" not in r.stdout, r.stdout[:300])


def build_info_series(text):
    """[(labels as a dict, value)] of every hardneg_build_info sample."""
    return [(dict(re.findall(r'(\w+)="([^"]*)"', labels)), value)
            for labels, value in re.findall(
                r'^hardneg_build_info\{([^}]*)\} (\S+)$', text, re.MULTILINE)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build_dir", required=True)
    args = ap.parse_args()
    b = os.path.abspath(args.build_dir)
    server = os.path.join(b, "server", "hardneg-server")
    router = os.path.join(b, "router", "hardneg-router")
    cli = os.path.join(b, "client", "hardneg")
    version = project_version()

    check_help("hardneg-server", server,
               ["server/server_flags.cc", "server/common_flags.cc"])
    check_help("hardneg-router", router,
               ["router/main.cc", "server/common_flags.cc"])
    r = run([server, "--checkpoints", "/nonexistent", "--grpc_port", "0",
             "--metrics_port", "-1", "--scan", "fp32"])
    check("hardneg-server --scan fp32: refused, naming the flag and its values",
          r.returncode != 0 and "--scan" in r.stderr
          and "auto, f32, bf16, int8" in r.stderr, (r.returncode, r.stderr))
    r = run([cli, "--help"])
    check("hardneg --help: exit 0, lists version",
          r.returncode == 0 and "version" in r.stdout, r.returncode)
    seen = {}
    for name, cmd in (("hardneg-server", [server, "--version"]),
                      ("hardneg-router", [router, "--version"]),
                      ("hardneg", [cli, "--version"]),
                      ("hardneg", [cli, "version"])):
        seen[name] = check_version(name, cmd, version)

    work = tempfile.mkdtemp(prefix="hardneg_help_")
    ck = os.path.join(work, "ck")
    mc.write_checkpoint(ck, "v1", 1, 50, 4, seed=0)
    s = mc.Server(server, ck, work)
    try:
        series = build_info_series(s.scrape())
        want = ({"version": version, "revision": seen["hardneg-server"][1]}
                if seen["hardneg-server"] else None)
        check("hardneg-server exports hardneg_build_info{version,revision} 1",
              series == [(want, "1")], series)
        rdir = os.path.join(work, "router")
        os.makedirs(rdir)
        out = open(os.path.join(rdir, "out"), "w+")
        proc = subprocess.Popen(
            [router, f"--shards=127.0.0.1:{s.grpc_port}", "--grpc_port=0",
             "--metrics_port=0", "--host=127.0.0.1"], stdout=out,
            stderr=subprocess.DEVNULL)
        try:
            port = None
            for _ in range(200):
                out.seek(0)
                m = re.search(r"^metrics on (\d+)$", out.read(), re.MULTILINE)
                if m:
                    port = int(m.group(1))
                    break
                time.sleep(0.05)
            text = mc.http_get(f"http://127.0.0.1:{port}/metrics") if port \
                else ""
            check("hardneg-router exports hardneg_build_info 1",
                  build_info_series(text) == [(want, "1")],
                  build_info_series(text))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        s.stop()
    return CHECKS.finish()


if __name__ == "__main__":
    sys.exit(main())
