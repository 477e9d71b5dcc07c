#!/usr/bin/python3
"""examples/distributed_mining.py under `torchrun --nproc_per_node 2` (gloo,
CPU) against a real hardneg-server that starts with no version at all.

Checks what the example promises a distributed job: both ranks trained
every epoch; rank 0 published one version per epoch (epoch-0, epoch-1, ...);
each rank mined each epoch only from that epoch's version (sequence at
least the published one, through min_index_sequence), over its own stream;
the server serves the last epoch's version at the end.

  /usr/bin/python3 python/tests/test_torchrun.py \\
      --server build/server/hardneg-server [--work_dir /tmp/hardneg_torchrun]

Exits 1 on any failure.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(PYTHON_DIR)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import loopback_server  # noqa: E402  (start)

EPOCHS = 3


def dump_stacks(pid):
    """SIGABRT to every process under `pid` (the ranks print their stacks
    through PYTHONFAULTHANDLER), after listing them."""
    tree = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "--ppid",
                           str(pid)], capture_output=True, text=True).stdout
    print(f"torchrun (pid {pid}) did not end; its children:\n{tree}")
    pids = [line.split()[0] for line in tree.splitlines()[1:]] + [pid]
    for p in pids:  # the ranks, then torchrun itself (also Python)
        try:
            os.kill(int(p), signal.SIGABRT)
        except (OSError, ValueError):
            pass
        time.sleep(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--work_dir")
    parser.add_argument("--torchrun", default="/usr/bin/torchrun")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="hardneg_torchrun_")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "ck"))
    # The package with its stubs generated into the work dir, not the tree.
    py = os.path.join(work, "py")
    shutil.copytree(os.path.join(PYTHON_DIR, "hardneg"),
                    os.path.join(py, "hardneg"),
                    ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    subprocess.run([os.path.join(PYTHON_DIR, "generate.sh"), py], check=True,
                   stdout=subprocess.DEVNULL)
    proc, port = loopback_server.start(args.server,
                                       os.path.join(work, "ck"), work)
    failures = []

    def check(name, ok, detail=""):
        print(f"{'PASS' if ok else 'FAIL'} {name}"
              f"{': ' + str(detail) if detail and not ok else ''}")
        if not ok:
            failures.append(name)

    t0 = time.time()
    try:
        summary = os.path.join(work, "summary.json")
        # PYTHONFAULTHANDLER: a rank stopped with SIGABRT (below) prints
        # every thread's stack, so that a hang says where it is.
        env = dict(os.environ, PYTHONPATH=py, OMP_NUM_THREADS="1",
                   PYTHONFAULTHANDLER="1")
        out_path = os.path.join(work, "torchrun.out")
        # Output to a file, not a pipe: a pipe held open by a lingering
        # process would hang the wait even after torchrun ended.
        with open(out_path, "w") as out:
            run = subprocess.Popen(
                [args.torchrun, "--standalone", "--nproc_per_node", "2",
                 # Debian's torchrun fails on Python 3.11 with the default
                 # 0s (see the example's docstring).
                 "--redirects", "1", "--tee", "1",
                 os.path.join(ROOT, "examples", "distributed_mining.py"),
                 "--target", f"127.0.0.1:{port}", "--epochs", str(EPOCHS),
                 "--out", summary],
                env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                returncode = run.wait(timeout=180)
            except subprocess.TimeoutExpired:
                returncode = None
                dump_stacks(run.pid)
                if run.poll() is None:
                    run.kill()
                run.wait()
        with open(out_path) as f:
            output = f.read()
        # All of it on failure: the ranks' stacks come before torchrun's.
        print(output[-3000:] if returncode == 0 else output[-50000:])
        check("torchrun with 2 ranks exits 0 (within 180 s)",
              returncode == 0, f"exit {returncode}; see above")
        if returncode != 0:
            return 1
        with open(summary) as f:
            result = json.load(f)
        log = result["log"]
        check("2 ranks", result["world_size"] == 2, result["world_size"])
        check("every rank trained every epoch",
              sorted((e["rank"], e["epoch"]) for e in log)
              == [(r, e) for r in range(2) for e in range(EPOCHS)],
              [(e["rank"], e["epoch"]) for e in log])
        check("every rank ran batches", all(e["batches"] > 0 for e in log))
        for e in log:
            names = {name for name, _ in e["versions"]}
            seqs = [seq for _, seq in e["versions"]]
            check(f"rank {e['rank']} epoch {e['epoch']} mined only from "
                  f"epoch-{e['epoch']} (sequence >= {e['sequence']})",
                  names == {f"epoch-{e['epoch']}"}
                  and min(seqs) >= e["sequence"], e["versions"])
        sequences = sorted({(e["epoch"], e["sequence"]) for e in log})
        check("one new version per epoch, in order",
              len(sequences) == EPOCHS
              and [s for _, s in sequences] == sorted(
                  {s for _, s in sequences}), sequences)
        check("the loss is finite",
              all(e["loss"] == e["loss"] and e["loss"] < 1e9 for e in log))
        sys.path.insert(0, py)
        import hardneg
        info = hardneg.Client(f"127.0.0.1:{port}").info()
        check(f"the server serves epoch-{EPOCHS - 1}",
              info.version.name == f"epoch-{EPOCHS - 1}"
              and info.size == 4000, info)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"{'FAILED' if failures else 'OK'}: {len(failures)} failed "
          f"({time.time() - t0:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
