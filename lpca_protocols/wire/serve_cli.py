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
    max_buffered_mb: int = typer.Option(
        256, min=1, help="MiB of requests held across all connections (partial and queued frames)."
    ),
    max_positions: int | None = typer.Option(
        None, min=1, help="Positions per RESUME (default: the model's max_position_embeddings)."
    ),
    max_compute: int | None = typer.Option(
        None, min=1, help="Position-blocks (positions x layers) per RESUME (default: 2048 x layers)."
    ),
    max_decoded_mb: int = typer.Option(64, min=1, help="MiB a RESUME's tensors may decode to."),
    rotation_seed: list[int] = typer.Option(
        [0], help="rotq / rotq-tcq seeds accepted (repeat the option; each rotation is built at start)."
    ),
    ready_file: Path | None = typer.Option(None, help="Write 'host port' here once listening (for scripts)."),
) -> None:
    """Host a model: answer "resume from this hidden state at layer l" with logits, top tokens or the
    final hidden state, over the LPCA wire protocol (docs/wire.md). Ctrl-C shuts down gracefully."""
    import lpca_models
    from lpca_protocols.codecs import CodebookStore
    from lpca_protocols.wire.admission import AdmissionLimits
    from lpca_protocols.wire.server import WireServer
    from lpca_protocols.wire.service import ResumeService

    if max_buffered_mb < max_frame_mb:
        raise typer.BadParameter(
            f"must be at least --max-frame-mb ({max_frame_mb}), got {max_buffered_mb}",
            param_hint="--max-buffered-mb",
        )
    bad = [s for s in rotation_seed if not 0 <= s < 1 << 64]
    if bad:
        raise typer.BadParameter(f"seeds are integers in [0, 2**64), got {bad}", param_hint="--rotation-seed")
    limits = AdmissionLimits(
        max_positions=max_positions,
        max_compute=max_compute,
        max_decoded_bytes=max_decoded_mb << 20,
        rotation_seeds=tuple(dict.fromkeys(rotation_seed)),
    )
    b = lpca_models.load(model, backend=backend)
    store = CodebookStore(codebooks) if codebooks is not None else None
    service = ResumeService(b, host=name, codebooks=store, max_packet=max_frame_mb << 20, limits=limits)
    service.warm()  # every rotation and alphabet admission allows: no accepted packet pays for one
    server = WireServer(
        service,
        host,
        port,
        max_frame=max_frame_mb << 20,
        max_inflight=max_inflight,
        max_queue=max_queue,
        max_buffered=max_buffered_mb << 20,
        read_timeout=read_timeout,
    )

    async def main() -> None:
        await server.start()
        info = b.info
        a = service.admission
        print(
            f"lpca serve: {info.name} ({info.n_layers} layers, d={info.hidden_size}, "
            f"fingerprint {info.fingerprint[:12]}) on {host}:{server.port}; admits up to "
            f"{a.max_positions} positions, {a.max_compute} position-blocks, "
            f"rotation seeds {list(limits.rotation_seeds)}",
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
