"""opensips-cli's default FIFO fallback `/tmp/opensips_fifo` reaches a server on its defaults.

The defaults are the user's own server's paths, so this test never touches the real /tmp:
it runs server and client in a private mount namespace (`unshare -m`) whose /tmp is a
fresh tmpfs. opensips-cli is given no fifo_file, so it tries its default
/var/run/opensips/opensips_fifo, finds none, and falls back to /tmp/opensips_fifo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
set -u
cd "$ROOT"   # the working directory stays on the real checkout once /tmp is covered
mount -t tmpfs mqtmp /tmp || exit 90
# a checkout under /tmp: bind it back ("." is resolved by the kernel against the old cwd)
case "$ROOT" in
  /tmp/*) mkdir -p "$ROOT" && mount --no-canonicalize --bind . "$ROOT" || exit 91;;
esac
if [ -e /var/run/opensips/opensips_fifo ]; then mount -t tmpfs mqrun /var/run/opensips; fi
cat > /tmp/cfg.yaml <<'YAML'
mqueue: ["name=fallback_q"]
fifo: {}
YAML
"$PY" -m mi_server -c /tmp/cfg.yaml 2>/tmp/server.log &
srv=$!
for _ in $(seq 100); do [ -p /tmp/opensips_fifo ] && break; sleep 0.05; done
"$CLI" -o communication_type=fifo -x mi mq_get_sizes > /tmp/out.txt 2>/tmp/err.txt \
  || echo "cli exit $?" >> /tmp/err.txt
kill -TERM $srv 2>/dev/null || echo "server was not running" >> /tmp/err.txt
wait $srv || echo "server exit $?" >> /tmp/err.txt
[ ! -e /tmp/opensips_fifo ] || echo "fifo left behind" >> /tmp/err.txt
cat /tmp/out.txt; cat /tmp/err.txt /tmp/server.log >&2
"""

def test_cli_without_fifo_file_falls_back_to_tmp_opensips_fifo():
    assert shutil.which("unshare"), "util-linux unshare is needed for this isolation"
    run = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", SCRIPT],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(ROOT), "ROOT": str(ROOT),
             "PY": sys.executable, "CLI": str(Path(sys.executable).with_name("opensips-cli"))},
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"Queue": [{"name": "fallback_q", "size": 0}]}, run.stderr
    for trouble in ("cli exit", "server exit", "server was not running", "fifo left behind"):
        assert trouble not in run.stderr, run.stderr
