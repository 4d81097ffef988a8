"""Registers the built-in channels through the same hook third-party plugins use."""

from __future__ import annotations

from collections.abc import Callable

from lpca_protocols.hookspecs import hookimpl


@hookimpl
def register_channels(register: Callable[[type], None]) -> None:
    from lpca_protocols.channels.cipher import CipherChannel
    from lpca_protocols.channels.graft import GraftChannel
    from lpca_protocols.channels.hidden_packet import HiddenPacketChannel
    from lpca_protocols.channels.kv_bridge import KVBridgeChannel
    from lpca_protocols.channels.kv_share import KVShareChannel
    from lpca_protocols.channels.latent_bridge import LatentBridgeChannel
    from lpca_protocols.channels.latent_codebook import LatentCodebookChannel
    from lpca_protocols.channels.latent_prefix import LatentPrefixChannel
    from lpca_protocols.channels.none import NoneChannel
    from lpca_protocols.channels.oracle_text import OracleTextChannel
    from lpca_protocols.channels.retrieval import RetrievalChannel
    from lpca_protocols.channels.skyline import SkylineChannel
    from lpca_protocols.channels.structured import StructuredChannel
    from lpca_protocols.channels.summary import SummaryChannel
    from lpca_protocols.channels.text import TextBudgetChannel, TextChannel

    for cls in (
        NoneChannel,
        TextChannel,
        TextBudgetChannel,
        SummaryChannel,
        RetrievalChannel,
        StructuredChannel,
        SkylineChannel,
        OracleTextChannel,
        CipherChannel,
        GraftChannel,
        KVShareChannel,
        HiddenPacketChannel,
    ):
        register(cls)
    register(LatentPrefixChannel)
    register(LatentCodebookChannel)
    register(LatentBridgeChannel)
    register(KVBridgeChannel)
