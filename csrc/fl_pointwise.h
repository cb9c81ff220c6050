/* Template (no include guard), included by each family body that needs it, once per
 * instantiation after fl_vec.h: per-element loss and gradient of the elementwise losses
 * that more than one family computes. One vector of W elements; the caller loads,
 * weights, masks the partial vector and sums. */

/* Squared error of the residual r: l = r^2, dl/dr = 2 r. */
FL_INL void N_(sqerr_point)(V r, V *l, V *d) {
    *l = r * r;
    *d = r + r;
}

/* Binary cross-entropy with logits x, target t and positive weight pw (PyTorch's formula):
 *   l = (1 - t) x + lw softplus(-x),  lw = 1 + (pw - 1) t,
 *   dl/dx = (1 - t) - lw sigmoid(-x).
 * Rearranged so both terms of l are >= 0 for t in [0, 1] (no cancellation):
 * softplus(-x) = log1p(e) + max(-x, 0) with e = exp(-|x|), and for x < 0,
 * (1 - t) x - lw x = -pw t x; likewise dl/dx = lw sigmoid(x) - pw t for x < 0.
 * pw: NULL (all ones) or the nk weights of this vector, read after exp (that order
 * keeps bce_block's loop as compiled before the split into this function).
 * p, q: NULL, or sigmoid(x) and sigmoid(-x) from the same exponential (the focal loss). */
FL_INL void N_(bce_logits_point)(V x, V t, const T *pw, int64_t nk, V *l, V *d, V *p, V *q) {
    VI neg = x < (T)0;
    V e = N_(vexp_le0_nan)(N_(vsel)(neg, x, -x));    /* exp(-|x|) in [0, 1] */
    V pwk = pw ? N_(vload_n)(pw, nk, 1) : N_(vset1)(1);
    V lw = (pwk - (T)1) * t + (T)1;
    *l = N_(vsel)(neg, -(pwk * t) * x, ((T)1 - t) * x) + lw * N_(vlog1p_unit)(e);
    V s = (T)1 / ((T)1 + e);                 /* sigmoid(|x|); e s = sigmoid(-|x|) */
    V es = e * s;
    *d = N_(vsel)(neg, lw * es - pwk * t, ((T)1 - t) - lw * es);
    if (p) {
        *p = N_(vsel)(neg, es, s);
        *q = N_(vsel)(neg, s, es);
    }
}
