"""Linear (kernelised) attention: softmax replaced by a feature map, so keys and values fold into a
(F x D) state and cost grows as O(N) in time and memory. Each variant's definition is its quadratic
form, softmax-free: out_i = sum_j k(q_i, k_j) v_j / sum_j k(q_i, k_j)."""
