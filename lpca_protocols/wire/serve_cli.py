"""`lpca serve`: host a model and answer RESUME packets over TCP.

Registered in the CLI as ``app.command()(serve)``; also runnable on its own:
``python -m lpca_protocols.wire.serve_cli --model tiny-random-llama --port 7070``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import typer


def serve(
    model: str = typer.Option("smollm2-135m", help="Zoo id or model directory to host."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(7070, min=0, max=65535, help="TCP port (0 picks a free one)."),
    backend: str = typer.Option("torch", help="Model backend: torch or mlx."),
    name: str = typer.Option("", help="Host name announced in packets (default: this machine's)."),
    codebooks: Path | None = typer.Option(None, help="Directory of .npz codebooks for the learned codecs."),
    max_frame_mb: int = typer.Option(64, min=1, help="Largest accepted packet, in MiB."),
    max_inflight: int = typer.Option(16, min=1, help="Open requests per connection before reading pauses."),
    max_queue: int = typer.Option(256, min=1, help="Requests waiting for the model before 'overloaded'."),
    read_timeout: float = typer.Option(30.0, min=0.1, help="Seconds a partial frame may take to arrive."),
    ready_file: Path | None = typer.Option(None, help="Write 'host port' here once listening (for scripts)."),
) -> None:
    """Host a model: answer "resume from this hidden state at layer l" with logits, top tokens or the
    final hidden state, over the LPCA wire protocol (docs/wire.md). Ctrl-C shuts down gracefully."""
    import lpca_models
    from lpca_protocols.codecs import CodebookStore
    from lpca_protocols.wire.server import WireServer
    from lpca_protocols.wire.service import ResumeService

    b = lpca_models.load(model, backend=backend)
    store = CodebookStore(codebooks) if codebooks is not None else None
    service = ResumeService(b, host=name, codebooks=store, max_packet=max_frame_mb << 20)
    server = WireServer(
        service,
        host,
        port,
        max_frame=max_frame_mb << 20,
        max_inflight=max_inflight,
        max_queue=max_queue,
        read_timeout=read_timeout,
    )

    async def main() -> None:
        await server.start()
        info = b.info
        print(
            f"lpca serve: {info.name} ({info.n_layers} layers, d={info.hidden_size}, "
            f"fingerprint {info.fingerprint[:12]}) on {host}:{server.port}",
            flush=True,
        )
        if ready_file is not None:
            ready_file.write_text(f"{host} {server.port}\n")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("lpca serve: shutting down", file=sys.stderr, flush=True)
        await server.close(grace=5.0)

    asyncio.run(main())


if __name__ == "__main__":
    typer.run(serve)
