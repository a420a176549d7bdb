# One shard of `testfleet pytest --rerun-failures N`, run by a worker as
#   PY -c <this file> REPORT RERUNS OPTION_COUNT OPTIONS... NODE_IDS...
# Runs pytest on the shard, then the tests that failed or errored again, by node id, up to
# RERUNS more times while any still fails. Every round's test cases go into REPORT, one JUnit
# XML file, later rounds after earlier ones: a test reported failed and then passed reads as
# flaky there (testfleet's JUnit reader), and only its last report counts. Exits as the last
# pytest run did; a run that could not test (pytest's codes 2 and up) is not repeated.
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

# One pytest session in a process of its own (so that each round imports the code afresh),
# writing the node ids of its failed tests, one per line, to the file named first.
ROUND = r"""
import sys, pytest

class Failed:
    def __init__(self):
        self.ids = []

    def pytest_runtest_logreport(self, report):
        if report.failed and report.nodeid not in self.ids:
            self.ids.append(report.nodeid)

failed = Failed()
code = pytest.main(sys.argv[2:], plugins=[failed])
with open(sys.argv[1], "w", encoding="utf-8") as out:
    out.write("\n".join(failed.ids))
sys.exit(int(code))
"""


def main(argv):
    report, reruns, option_count = argv[0], int(argv[1]), int(argv[2])
    options, tests = argv[3 : 3 + option_count], argv[3 + option_count :]
    suites = []
    code = 0
    with tempfile.TemporaryDirectory(prefix="testfleet-rerun-") as scratch:
        for round_no in range(reruns + 1):
            xml = os.path.join(scratch, f"round-{round_no}.xml")
            failed_ids = os.path.join(scratch, f"failed-{round_no}.txt")
            args = ["-p", "no:cacheprovider", f"--junit-xml={xml}", *options, *tests]
            code = subprocess.call([sys.executable, "-c", ROUND, failed_ids, *args])
            if os.path.exists(xml):
                root = ET.parse(xml).getroot()
                suites.extend(root.iter("testsuite") if root.tag == "testsuites" else [root])
            if code != 1 or not os.path.exists(failed_ids):
                break
            with open(failed_ids, encoding="utf-8") as ids:
                tests = [line for line in ids.read().splitlines() if line]
            if not tests:
                break
            if round_no < reruns:
                print(f"testfleet: running {len(tests)} failed tests again "
                      f"({round_no + 1} of {reruns})", flush=True)
    merged = ET.Element("testsuites")
    merged.extend(suites)
    ET.ElementTree(merged).write(report, encoding="utf-8", xml_declaration=True)
    return code


sys.exit(main(sys.argv[1:]))
