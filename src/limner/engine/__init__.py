"""The embedded llama.cpp engine: bundled models, a resident warm process.

    core.py      Engine and Job: the in-process engine (decode loop, prefix cache)
    statecache   bounded KV snapshots, so 2-3 buffers in turn stay warm
    prompts.py   chat templates (Jinja2 from the GGUF), FIM layouts, stop strings
    quiet.py     keeps llama.cpp's C logging off the terminal
    models.py    bundled + registered models, `limner models`
    gguf.py      a pure-Python GGUF metadata reader (no llama_cpp import)
    daemon.py    the resident engine process on a Unix socket
    supervisor   the engine's parent: records a death by signal (engine.exit.json)
    crash.py     naming a crash in the !error; crashes in a row; a build for another CPU
    client.py    connect-or-spawn, streaming client; LIMNER_ENGINE=inproc
    protocol.py  the JSON-lines wire format
    control.py   `limner engine status|stop`

Nothing here knows about buffers: the embedded backend (backends/embedded.py)
turns a Request into a Job.
"""
