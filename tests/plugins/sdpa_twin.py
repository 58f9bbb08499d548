"""torch's SDPA under another name: trained under the protocol beside sdpa, it must be judged `same`."""

from dataclasses import replace

from attnbench.variants.exact.sdpa import SdpaAttention


class SdpaTwin(SdpaAttention):
    info = replace(SdpaAttention.info, name="sdpa-twin", summary="sdpa under another name (a test plugin)")
