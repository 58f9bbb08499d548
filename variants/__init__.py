"""Built-in attention variants. Each lives in its own module; none is imported until it is asked for.

`BUILTIN` maps a variant's name to the import path of its class, so that listing or running one
variant never imports another variant's optional package.
"""

BUILTIN: dict[str, str] = {
    "naive": "attnbench.variants.exact.naive:NaiveAttention",
    "sdpa": "attnbench.variants.exact.sdpa:SdpaAttention",
    "sdpa-math": "attnbench.variants.exact.sdpa_math:SdpaMathAttention",
    "sdpa-flash": "attnbench.variants.exact.sdpa_flash:SdpaFlashAttention",
    "sdpa-efficient": "attnbench.variants.exact.sdpa_efficient:SdpaEfficientAttention",
    "sdpa-cudnn": "attnbench.variants.exact.sdpa_cudnn:SdpaCudnnAttention",
    "chunked": "attnbench.variants.exact.chunked:ChunkedAttention",
    "flex": "attnbench.variants.exact.flex:FlexAttention",
    "flash-attn": "attnbench.variants.exact.flash_attn:FlashAttnAttention",
    "xformers": "attnbench.variants.exact.xformers:XformersAttention",
    "linear-elu": "attnbench.variants.linear.elu:LinearEluAttention",
    "performer": "attnbench.variants.linear.performer:PerformerAttention",
    "linear-fla": "attnbench.variants.linear.fla:FlaLinearAttention",
    "sliding-window": "attnbench.variants.sparse.sliding_window:SlidingWindowAttention",
    "strided": "attnbench.variants.sparse.strided:StridedAttention",
    "fixed": "attnbench.variants.sparse.fixed:FixedAttention",
    "longformer": "attnbench.variants.sparse.longformer:LongformerAttention",
    "bigbird": "attnbench.variants.sparse.bigbird:BigBirdAttention",
    "linformer": "attnbench.variants.lowrank.linformer:LinformerAttention",
    "nystrom": "attnbench.variants.lowrank.nystrom:NystromAttention",
}
