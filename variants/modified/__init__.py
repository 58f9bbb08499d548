"""Modified softmaxes: attention whose weights or output change softmax attention's form (an output gate,
two softmaxes subtracted, a sigmoid in place of the softmax, a forget-gate bias, a sink logit)."""
