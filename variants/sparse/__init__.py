"""Sparse attention: softmax attention restricted to a fixed pattern. Each pattern is a small pure
mask function (the FlexAttention convention) that is at once the kernel's block mask and, densified,
the variant's definition: the masked softmax."""
