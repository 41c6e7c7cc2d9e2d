"""The check runner the deploy scripts share: each check prints `PASS [label: ]name` or
`FAIL [label: ]name: why` (tests/deploy/check.sh counts those lines); a crash in a check is a
failure of that check, not of the run."""


class Checks:
    def __init__(self, label=None):
        self.prefix = f"{label}: " if label else ""
        self.failed = 0
        self.passed = 0

    def check(self, name, fn):
        try:
            fn()
        except Exception as e:
            self.failed += 1
            msg = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            print(f"FAIL {self.prefix}{name}: {msg}")
        else:
            self.passed += 1
            print(f"PASS {self.prefix}{name}")
