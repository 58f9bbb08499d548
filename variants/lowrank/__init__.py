"""Low-rank attention: the N x N attention matrix approximated through a rank-k factorisation, so
memory and time grow as O(N k). Neither variant here is causal: both mix information across the
whole sequence before the softmax."""
