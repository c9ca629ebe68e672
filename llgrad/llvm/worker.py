"""A process that compiles parts of modules for another (``runtime.workers``).

Run as a script (``python .../llgrad/llvm/worker.py``), so that it imports llvmlite and
``pipeline`` from this folder but not llgrad's package, whose import takes ten times
as long as the worker's start.  It reads requests from stdin until end of file: a JSON
line ``{"cpu", "features", "speed_level", "ir_bytes"}`` then the IR; it answers each on
stdout with a JSON line ``{"object_bytes", "ir_bytes"}`` then the object code and the
optimised IR, or ``{"error": message}``.
"""
from __future__ import annotations

import json
import sys


def serve(pipeline, requests, answers) -> None:
    """Answer ``requests`` (a binary stream) on ``answers`` until end of file."""
    pipeline.initialise()
    machines = {}
    for line in iter(requests.readline, b""):
        request = json.loads(line)
        text = requests.read(request["ir_bytes"]).decode()
        try:
            key = (request["cpu"], request["features"])
            if key not in machines:
                machines[key] = pipeline.target_machine(*key)
            obj, optimized = pipeline.compile_object(text, machines[key],
                                                     speed_level=request["speed_level"])
        except Exception as e:  # noqa: BLE001 - the caller compiles the part itself
            answers.write(json.dumps({"error": str(e)}).encode() + b"\n")
        else:
            ir_bytes = optimized.encode()
            answers.write(json.dumps({"object_bytes": len(obj),
                                      "ir_bytes": len(ir_bytes)}).encode() + b"\n")
            answers.write(obj)
            answers.write(ir_bytes)
        answers.flush()


if __name__ == "__main__":
    import pipeline     # this file's folder is the script's path entry
    serve(pipeline, sys.stdin.buffer, sys.stdout.buffer)
