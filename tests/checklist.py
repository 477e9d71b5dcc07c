"""The pass/fail list the Python test scripts under tests/ print.

    checks = Checklist()
    checks.check("the server starts", ok, detail_shown_on_failure)
    ...
    sys.exit(checks.finish())   # prints OK/FAILED and returns the exit code
"""
import sys


class Checklist:
    """Named checks, printed as they happen; a failure shows its detail
    (the last 3000 characters)."""

    def __init__(self):
        self.failures = []

    def check(self, name, ok, detail=""):
        shown = str(detail)
        print(f"{'PASS' if ok else 'FAIL'} {name}"
              f"{': ' + shown[-3000:] if not ok and shown else ''}",
              flush=True)
        if not ok:
            self.failures.append(name)
        return ok

    def finish(self):
        """Prints the summary; returns the exit code (1 on any failure)."""
        print(f"{'FAILED' if self.failures else 'OK'}: "
              f"{len(self.failures)} failed", file=sys.stdout, flush=True)
        return 1 if self.failures else 0
