/* Template body (see fl_instantiate.h): divergences between softmax rows
 * (entropy, KL, Jensen-Shannon) and the elementwise Gaussian losses (diagonal
 * Gaussian KL, VAE reconstruction, Gaussian NLL).
 *
 * Softmax rows are C-contiguous, C elements each, and are handled one row pair
 * at a time while it is hot in cache: pass 1 takes both maxima, pass 2 the
 * exponentials (kept in per-thread scratch), their sums and the divergence,
 * pass 3 both gradients. A gradient may alias any input row: pass 3 reads an
 * element of both inputs before it writes that element of either gradient.
 *
 * A class with probability 0 (logit -inf, or an exponential that underflows)
 * contributes exactly 0 (0 * log 0 = 0), selected by `e == 0`. A row whose
 * maximum is not finite (a NaN or +inf logit, or all -inf) is no distribution:
 * its loss and gradient are NaN, and every other row has shifted logits in
 * [-inf, 0], which is all vexp_le0 handles. */

/* Float64 partial sums kept as vectors: a block of FL_DIV_SUM_BLOCK elements is
 * summed per lane in the row dtype, then widened and added lane-wise into a
 * float64 vector (a few instructions, not a serial chain of W scalar adds);
 * dv_dsum adds the lanes in a fixed order at the end. */
typedef double N_(VD) __attribute__((vector_size(FL_VBYTES)));
#define VD N_(VD)
#if !FL_DOUBLE
typedef float N_(VH) __attribute__((vector_size(FL_VBYTES / 2)));
#endif
FL_INL VD N_(dv_widen_add)(VD acc, V v) {
#if FL_DOUBLE
    return acc + v;
#else
    N_(VH) lo, hi;
    memcpy(&lo, &v, sizeof lo);
    memcpy(&hi, (const char *)&v + sizeof lo, sizeof hi);
    return acc + __builtin_convertvector(lo, VD) + __builtin_convertvector(hi, VD);
#endif
}
FL_INL double N_(dv_dsum)(VD v) {
    double s = 0.0;
    for (int j = 0; j < (int)(sizeof v / sizeof(double)); j++) s += v[j];
    return s;
}
FL_INL VD N_(dv_dzero)(void) { VD z = {0}; return z; }

/* Store of a full vector to a FL_VBYTES-aligned address that bypasses the caches
 * (x86 streaming store): a gradient far larger than the caches is written without
 * first being read in. Elsewhere a plain store. */
FL_INL void N_(dv_stream)(T *p, V v) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    _mm512_stream_pd(p, (__m512d)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    _mm512_stream_ps(p, (__m512)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && FL_DOUBLE
    _mm256_stream_pd(p, (__m256d)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    _mm256_stream_ps(p, (__m256)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 16 && FL_DOUBLE
    _mm_stream_pd(p, (__m128d)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 16
    _mm_stream_ps(p, (__m128)v);
#else
    N_(vstore)(p, v);
#endif
}

/* a * b + c, fused (one rounding) on the levels that have FMA, via the intrinsic:
 * GCC's contraction of a plain a * b + c depends on the surrounding code, and the
 * row writer must round alike on its aligned, unaligned and partial paths. */
FL_INL V N_(dv_fma)(V a, V b, V c) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    return (V)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    return (V)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && FL_DOUBLE
    return (V)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    return (V)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;      /* baseline x86-64 has no FMA: never contracted */
#endif
}

/* One vector of the row writer below, at offset k, n <= W lanes. */
FL_INL V N_(dv_write_vec)(const T *g, const T *X, const T *Z, const T *Y, T s1, T s0, T sy,
                          int acc, int64_t k, int64_t n) {
    V x = N_(vload_n)(X + k, n, 0);
    V v = N_(dv_fma)(x, N_(vset1)(s1), Z ? -N_(vload_n)(Z + k, n, 0) : N_(vset1)(s0));
    V m = Y ? N_(vload_n)(Y + k, n, 0) : N_(vset1)(sy);
    return acc ? N_(dv_fma)(v, m, N_(vload_n)(g + k, n, 0)) : v * m;
}

/* g[k] = (X[k] s1 - Z[k]) Y[k]  (Z NULL: X[k] s1 + s0; Y NULL: times sy), plus g[k]
 * if acc, for k < C: the gradient pass of every softmax-row kernel, over rows held
 * in scratch. With stream, the aligned middle of the row goes out with streaming
 * stores (the caller fences). */
static void N_(dv_write_row)(T *g, int64_t C, const T *X, const T *Z, const T *Y, T s1, T s0,
                             T sy, int acc, int stream) {
    int64_t k = 0;
    if (stream && ((uintptr_t)g % sizeof(T)) == 0) {
        int64_t h = (int64_t)(((FL_VBYTES - (uintptr_t)g % FL_VBYTES) % FL_VBYTES) / sizeof(T));
        if (h > C) h = C;
        if (h > 0) N_(vstore_part)(g, N_(dv_write_vec)(g, X, Z, Y, s1, s0, sy, acc, 0, h), h);
        for (k = h; k + W <= C; k += W)
            N_(dv_stream)(g + k, N_(dv_write_vec)(g, X, Z, Y, s1, s0, sy, acc, k, W));
    } else {
        for (; k + W <= C; k += W)
            N_(vstore)(g + k, N_(dv_write_vec)(g, X, Z, Y, s1, s0, sy, acc, k, W));
    }
    if (k < C) N_(vstore_part)(g + k, N_(dv_write_vec)(g, X, Z, Y, s1, s0, sy, acc, k, C - k), C - k);
}

/* Orders this thread's streaming stores before whatever follows (another thread's reads). */
FL_INL void N_(dv_fence)(int stream) {
#if FL_X86_DISPATCH
    if (stream) _mm_sfence();
#else
    (void)stream;
#endif
}

/* v, with the lanes where `m` is set replaced by 0. */
FL_INL V N_(dv_zero_if)(VI m, V v) { return N_(vsel)(m, N_(vset1)((T)0), v); }

/* Max of a row (NaN wins). */
static T N_(dv_max)(const T *x, int64_t C) {
    V vm = N_(vset1)(-(T)INFINITY);
    int64_t k = 0;
    for (; k + W <= C; k += W) vm = N_(vmax_nan)(vm, N_(vload)(x + k));
    if (k < C) vm = N_(vmax_nan)(vm, N_(vload_part)(x + k, C - k, -(T)INFINITY));
    return N_(vhmax_nan)(vm);
}

/* Plain max (NaN may be lost): one maxps. */
FL_INL V N_(dv_vmax)(V m, V x) { return N_(vsel)(x > m, x, m); }

/* Maxima of two rows (NaN wins) in one sweep. The sweep takes plain maxima and
 * sums (a NaN anywhere makes the sum NaN), two independent chains per row; only
 * a row whose sum is NaN (a NaN, or +inf and -inf together, or finite overflow
 * meeting -inf) is swept again with the exact NaN-propagating max. */
static void N_(dv_max2)(const T *a, const T *b, int64_t C, T *ma, T *mb) {
    V a0 = N_(vset1)(-(T)INFINITY), a1 = a0, b0 = a0, b1 = a0;
    V sa0 = N_(vset1)(0), sa1 = sa0, sb0 = sa0, sb1 = sa0;
    int64_t k = 0;
    for (; k + 2 * W <= C; k += 2 * W) {
        V x0 = N_(vload)(a + k), x1 = N_(vload)(a + k + W);
        V y0 = N_(vload)(b + k), y1 = N_(vload)(b + k + W);
        a0 = N_(dv_vmax)(a0, x0); a1 = N_(dv_vmax)(a1, x1);
        b0 = N_(dv_vmax)(b0, y0); b1 = N_(dv_vmax)(b1, y1);
        sa0 += x0; sa1 += x1; sb0 += y0; sb1 += y1;
    }
    for (; k < C; k += W) {
        const int64_t nk = C - k < W ? C - k : W;
        V x0 = N_(vload_n)(a + k, nk, -(T)INFINITY), y0 = N_(vload_n)(b + k, nk, -(T)INFINITY);
        a0 = N_(dv_vmax)(a0, x0);
        b0 = N_(dv_vmax)(b0, y0);
        sa0 += x0;
        sb0 += y0;
    }
    V sa = sa0 + sa1, sb = sb0 + sb1;
    V am = N_(dv_vmax)(a0, a1), bm = N_(dv_vmax)(b0, b1);
    T xa = am[0], xb = bm[0];
    double ta = 0.0, tb = 0.0;
    for (int j = 0; j < W; j++) {
        xa = am[j] > xa ? am[j] : xa;
        xb = bm[j] > xb ? bm[j] : xb;
        ta += (double)sa[j];
        tb += (double)sb[j];
    }
    *ma = ta == ta ? xa : N_(dv_max)(a, C);
    *mb = tb == tb ? xb : N_(dv_max)(b, C);
}

/* A row whose maximum is NaN, +inf or -inf (no distribution): loss and gradients NaN. */
static int N_(dv_bad_row)(T m1, T m2, int64_t C, double *loss, T *g1, T *g2) {
    if (m1 > -(T)INFINITY && m1 < (T)INFINITY && m2 > -(T)INFINITY && m2 < (T)INFINITY) return 0;
    *loss = NAN;
    for (int64_t k = 0; k < C; k++) {
        if (g1) g1[k] = (T)NAN;
        if (g2) g2[k] = (T)NAN;
    }
    return 1;
}

/* Entropy H = -sum p log p of softmax rows, into loss[r]. With z = x - max,
 * e = exp(z), s = sum e, t = sum e z:  H = log s - t / s and
 * dH/dx_j = -p_j (log p_j + H) = -(e_j / s) (z_j - t / s).
 * g (optional) gets the gradient of gscale * sum_r H_r. scratch: NULL or 2 C
 * elements (e and z, z zeroed where e == 0); without it the gradient pass recomputes. */
FL_INL V N_(ent_step)(V x, T m, V *e, V *as, V *at) {
    V z = x - m;
    *e = N_(vexp_le0)(z);
    z = N_(dv_zero_if)(*e == (T)0, z);
    *as += *e;
    *at += *e * z;
    return z;
}

static void N_(entropy_rows)(const T *x, T *g, int64_t n, int64_t C, double gscale,
                             double *loss, T *scratch, int stream) {
    T *se = scratch, *sz = scratch ? scratch + C : NULL;
    for (int64_t r = 0; r < n; r++) {
        const T *xr = x + r * C;
        T *gr = g ? g + r * C : NULL;
        const T m = N_(dv_max)(xr, C);
        if (N_(dv_bad_row)(m, 0, C, &loss[r], gr, NULL)) continue;
        VD vs = N_(dv_dzero)(), vt = vs;
        int64_t k;
        V e, z;
        for (int64_t b = 0; b < C; b += FL_DIV_SUM_BLOCK) {
            const int64_t end = b + FL_DIV_SUM_BLOCK < C ? b + FL_DIV_SUM_BLOCK : C;
            V as = N_(vset1)(0), at = N_(vset1)(0);
            for (k = b; k + W <= end; k += W) {
                z = N_(ent_step)(N_(vload)(xr + k), m, &e, &as, &at);
                if (scratch) { N_(vstore)(se + k, e); N_(vstore)(sz + k, z); }
            }
            if (k < end) {
                z = N_(ent_step)(N_(vload_part)(xr + k, end - k, -(T)INFINITY), m, &e, &as, &at);
                if (scratch) { N_(vstore_part)(se + k, e, end - k); N_(vstore_part)(sz + k, z, end - k); }
            }
            vs = N_(dv_widen_add)(vs, as);
            vt = N_(dv_widen_add)(vt, at);
        }
        const double s = N_(dv_dsum)(vs), ts = N_(dv_dsum)(vt) / s;
        loss[r] = log(s) - ts;
        if (!gr) continue;
        /* g = (z - ts) e (-gscale / s) */
        const T c = (T)(-gscale / s), cts = (T)(gscale * ts / s);
        if (scratch) {
            N_(dv_write_row)(gr, C, sz, NULL, se, c, cts, 0, 0, stream);
            continue;
        }
        V dummy = N_(vset1)(0);
        for (k = 0; k < C; k += W) {
            const int64_t nk = C - k < W ? C - k : W;
            z = N_(ent_step)(N_(vload_n)(xr + k, nk, -(T)INFINITY), m, &e, &dummy, &dummy);
            N_(vstore_n)(gr + k, (z * c + cts) * e, nk);
        }
    }
    N_(dv_fence)(stream);
}

/* Skipped row (label == ignore_index): loss 0, gradient 0 (q's left alone when
 * accumulating). Returns 1 when the row is skipped. */
static int N_(dv_skip_row)(const fl_div_params *p, const int64_t *labels, int64_t r, T *gar, T *gbr,
                           double *loss) {
    if (!labels || labels[r] != p->ignore_index) return 0;
    loss[r] = 0.0;
    if (gar) memset(gar, 0, (size_t)p->C * sizeof(T));
    if (gbr && !p->accumulate_q) memset(gbr, 0, (size_t)p->C * sizeof(T));
    return 1;
}

/* KL(softmax(a / T) || softmax(b / T)) per row, into loss[r]. With
 * za = (a - max a) / T, zb likewise, ea = exp(za), sa = sum ea (and b's),
 * d = za - zb (0 where ea == 0) and c = sum ea d / sa (= sum_k p_k (za_k - zb_k)):
 *   KL = c - log sa + log sb,
 *   dKL/dza_j = p_j (log p_j - log q_j - KL) = (ea_j / sa) (d_j - c),
 *   dKL/dzb_j = q_j - p_j.
 * ga / gb (either may be NULL) get those times gscale_p / gscale_q (which carry
 * the 1 / T of the chain rule and the reduction); with accumulate_q, gb is
 * added to. Where q has no mass on p's support, d = +inf and KL = +inf.
 * labels: NULL, or one per row; rows labelled p->ignore_index are skipped.
 * scratch: NULL or 3 C elements (ea, eb, d), so the gradient pass reads neither
 * input again; without it (long rows) that pass recomputes them. */
FL_INL V N_(kl_step)(V a, V b, T ma_it, T mb_it, T it, V *ea, V *eb, V *acc_a, V *acc_b, V *acc_t) {
    V za = a * it - ma_it, zb = b * it - mb_it;
    *ea = N_(vexp_le0)(za);
    *eb = N_(vexp_le0)(zb);
    V d = N_(dv_zero_if)(*ea == (T)0, za - zb);
    *acc_a += *ea;
    *acc_b += *eb;
    *acc_t += *ea * d;
    return d;
}

static void N_(kl_rows)(const T *a, const T *b, T *ga, T *gb, int64_t n, const int64_t *labels,
                        const fl_div_params *p, double *loss, T *scratch) {
    const int64_t C = p->C;
    const T it = (T)p->inv_t;
    const int acc_q = p->accumulate_q, stream = p->stream;
    T *sa_buf = scratch, *sb_buf = scratch ? scratch + C : NULL, *sd_buf = scratch ? scratch + 2 * C : NULL;
    for (int64_t r = 0; r < n; r++) {
        const T *ar = a + r * C, *br = b + r * C;
        T *gar = ga ? ga + r * C : NULL, *gbr = gb ? gb + r * C : NULL;
        if (N_(dv_skip_row)(p, labels, r, gar, gbr, loss)) continue;
        T ma, mb;
        N_(dv_max2)(ar, br, C, &ma, &mb);
        if (N_(dv_bad_row)(ma, mb, C, &loss[r], gar, gbr)) continue;
        const T ma_it = ma * it, mb_it = mb * it;
        VD vsa = N_(dv_dzero)(), vsb = vsa, vt = vsa;
        int64_t k;
        V ea, eb, d;
        for (int64_t k0 = 0; k0 < C; k0 += FL_DIV_SUM_BLOCK) {
            const int64_t end = k0 + FL_DIV_SUM_BLOCK < C ? k0 + FL_DIV_SUM_BLOCK : C;
            V acc_a = N_(vset1)(0), acc_b = N_(vset1)(0), acc_t = N_(vset1)(0);
            for (k = k0; k + W <= end; k += W) {
                d = N_(kl_step)(N_(vload)(ar + k), N_(vload)(br + k), ma_it, mb_it, it,
                                &ea, &eb, &acc_a, &acc_b, &acc_t);
                if (scratch) {
                    N_(vstore)(sa_buf + k, ea);
                    N_(vstore)(sb_buf + k, eb);
                    N_(vstore)(sd_buf + k, d);
                }
            }
            if (k < end) {
                const int64_t nk = end - k;
                d = N_(kl_step)(N_(vload_part)(ar + k, nk, -(T)INFINITY),
                                N_(vload_part)(br + k, nk, -(T)INFINITY), ma_it, mb_it, it,
                                &ea, &eb, &acc_a, &acc_b, &acc_t);
                if (scratch) {
                    N_(vstore_part)(sa_buf + k, ea, nk);
                    N_(vstore_part)(sb_buf + k, eb, nk);
                    N_(vstore_part)(sd_buf + k, d, nk);
                }
            }
            vsa = N_(dv_widen_add)(vsa, acc_a);
            vsb = N_(dv_widen_add)(vsb, acc_b);
            vt = N_(dv_widen_add)(vt, acc_t);
        }
        const double sa = N_(dv_dsum)(vsa), sb = N_(dv_dsum)(vsb), c = N_(dv_dsum)(vt) / sa;
        loss[r] = c - log(sa) + log(sb);
        if (!gar && !gbr) continue;
        /* ga = (d pg - pc) ea, gb = (eb sa / sb - ea) qa */
        const T pg = (T)(p->gscale_p / sa), pc = (T)(c * p->gscale_p / sa);
        const T rab = (T)(sa / sb), qa = (T)(p->gscale_q / sa);
        if (scratch) {
            if (gar) N_(dv_write_row)(gar, C, sd_buf, NULL, sa_buf, pg, -pc, 0, 0, stream);
            if (gbr) N_(dv_write_row)(gbr, C, sb_buf, sa_buf, NULL, rab, 0, qa, acc_q, stream);
            continue;
        }
        V dummy = N_(vset1)(0);
        for (k = 0; k < C; k += W) {
            const int64_t nk = C - k < W ? C - k : W;
            d = N_(kl_step)(N_(vload_n)(ar + k, nk, -(T)INFINITY), N_(vload_n)(br + k, nk, -(T)INFINITY),
                            ma_it, mb_it, it, &ea, &eb, &dummy, &dummy, &dummy);
            if (gar) N_(vstore_n)(gar + k, (d * pg - pc) * ea, nk);
            if (gbr) {
                V gk = (eb * rab - ea) * qa;
                if (acc_q) gk += N_(vload_n)(gbr + k, nk, 0);
                N_(vstore_n)(gbr + k, gk, nk);
            }
        }
    }
    N_(dv_fence)(stream);
}

/* Generalised Jensen-Shannon divergence per row, into loss[r]:
 *   JS = beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q,
 * p = softmax(a / T), q = softmax(b / T). With u = log p - log m, v = log q - log m
 * (0 where p, resp. q, is 0), Kp = sum p u, Kq = sum q v:
 *   dJS/dza_j = beta p_j (u_j - Kp),  dJS/dzb_j = (1 - beta) q_j (v_j - Kq).
 * beta = 0 or 1 makes m equal one side: JS is exactly 0.
 * scratch: NULL or 4 C elements (ea, eb, u, v); without it the later passes recompute. */
FL_INL void N_(js_exp_step)(V a, V b, T ma_it, T mb_it, T it, V *za, V *zb, V *ea, V *eb,
                            V *acc_a, V *acc_b) {
    *za = a * it - ma_it;
    *zb = b * it - mb_it;
    *ea = N_(vexp_le0)(*za);
    *eb = N_(vexp_le0)(*zb);
    *acc_a += *ea;
    *acc_b += *eb;
}
/* u and v from the exponentials (one log per element); accumulates ea u and eb v. */
FL_INL void N_(js_log_step)(V za, V zb, V ea, V eb, T pa, T pb, T la, T lb, V *u, V *v,
                            V *acc_p, V *acc_q) {
    V lm = N_(vlog)(ea * pa + eb * pb);
    *u = N_(dv_zero_if)(ea == (T)0, za - la - lm);
    *v = N_(dv_zero_if)(eb == (T)0, zb - lb - lm);
    *acc_p += ea * *u;
    *acc_q += eb * *v;
}

static void N_(js_rows)(const T *a, const T *b, T *ga, T *gb, int64_t n,
                        const fl_div_params *p, double *loss, T *scratch) {
    const int64_t C = p->C;
    const T it = (T)p->inv_t;
    const double beta = p->beta;
    const int stream = p->stream;
    T *sa_buf = scratch, *sb_buf = scratch ? scratch + C : NULL;
    T *su_buf = scratch ? scratch + 2 * C : NULL, *sv_buf = scratch ? scratch + 3 * C : NULL;
    for (int64_t r = 0; r < n; r++) {
        const T *ar = a + r * C, *br = b + r * C;
        T *gar = ga ? ga + r * C : NULL, *gbr = gb ? gb + r * C : NULL;
        T ma, mb;
        N_(dv_max2)(ar, br, C, &ma, &mb);
        if (N_(dv_bad_row)(ma, mb, C, &loss[r], gar, gbr)) continue;
        if (!(beta > 0.0 && beta < 1.0)) {
            /* m is p (or q): the divergence vanishes */
            loss[r] = 0.0;
            if (gar) memset(gar, 0, (size_t)C * sizeof(T));
            if (gbr) memset(gbr, 0, (size_t)C * sizeof(T));
            continue;
        }
        const T ma_it = ma * it, mb_it = mb * it;
        VD vsa = N_(dv_dzero)(), vsb = vsa;
        int64_t k;
        V za, zb, ea, eb, u, v;
        for (int64_t k0 = 0; k0 < C; k0 += FL_DIV_SUM_BLOCK) {
            const int64_t end = k0 + FL_DIV_SUM_BLOCK < C ? k0 + FL_DIV_SUM_BLOCK : C;
            V acc_a = N_(vset1)(0), acc_b = N_(vset1)(0);
            for (k = k0; k < end; k += W) {
                const int64_t nk = end - k < W ? end - k : W;
                N_(js_exp_step)(N_(vload_n)(ar + k, nk, -(T)INFINITY), N_(vload_n)(br + k, nk, -(T)INFINITY),
                                ma_it, mb_it, it, &za, &zb, &ea, &eb, &acc_a, &acc_b);
                if (scratch) {
                    N_(vstore_n)(sa_buf + k, ea, nk);
                    N_(vstore_n)(sb_buf + k, eb, nk);
                }
            }
            vsa = N_(dv_widen_add)(vsa, acc_a);
            vsb = N_(dv_widen_add)(vsb, acc_b);
        }
        const double sa = N_(dv_dsum)(vsa), sb = N_(dv_dsum)(vsb);
        const T pa = (T)(beta / sa), pb = (T)((1.0 - beta) / sb);
        const T la = (T)log(sa), lb = (T)log(sb);
        VD vkp = N_(dv_dzero)(), vkq = vkp;
        V dummy = N_(vset1)(0);
        for (int64_t k0 = 0; k0 < C; k0 += FL_DIV_SUM_BLOCK) {
            const int64_t end = k0 + FL_DIV_SUM_BLOCK < C ? k0 + FL_DIV_SUM_BLOCK : C;
            V acc_p = N_(vset1)(0), acc_q = N_(vset1)(0);
            for (k = k0; k < end; k += W) {
                const int64_t nk = end - k < W ? end - k : W;
                V xa = N_(vload_n)(ar + k, nk, -(T)INFINITY), xb = N_(vload_n)(br + k, nk, -(T)INFINITY);
                if (scratch) {
                    za = xa * it - ma_it;
                    zb = xb * it - mb_it;
                    ea = N_(vload_n)(sa_buf + k, nk, 0);
                    eb = N_(vload_n)(sb_buf + k, nk, 0);
                } else {
                    N_(js_exp_step)(xa, xb, ma_it, mb_it, it, &za, &zb, &ea, &eb, &dummy, &dummy);
                }
                N_(js_log_step)(za, zb, ea, eb, pa, pb, la, lb, &u, &v, &acc_p, &acc_q);
                if (scratch) {
                    N_(vstore_n)(su_buf + k, u, nk);
                    N_(vstore_n)(sv_buf + k, v, nk);
                }
            }
            vkp = N_(dv_widen_add)(vkp, acc_p);
            vkq = N_(dv_widen_add)(vkq, acc_q);
        }
        const double kp = N_(dv_dsum)(vkp) / sa, kq = N_(dv_dsum)(vkq) / sb;
        loss[r] = beta * kp + (1.0 - beta) * kq;
        if (!gar && !gbr) continue;
        /* ga = (u - Kp) ea gpa, gb = (v - Kq) eb gqb */
        const T gpa = (T)(p->gscale_p * beta / sa), gqb = (T)(p->gscale_q * (1.0 - beta) / sb);
        const T kpg = (T)(kp * p->gscale_p * beta / sa), kqg = (T)(kq * p->gscale_q * (1.0 - beta) / sb);
        if (scratch) {
            if (gar) N_(dv_write_row)(gar, C, su_buf, NULL, sa_buf, gpa, -kpg, 0, 0, stream);
            if (gbr) N_(dv_write_row)(gbr, C, sv_buf, NULL, sb_buf, gqb, -kqg, 0, 0, stream);
            continue;
        }
        for (k = 0; k < C; k += W) {
            const int64_t nk = C - k < W ? C - k : W;
            N_(js_exp_step)(N_(vload_n)(ar + k, nk, -(T)INFINITY), N_(vload_n)(br + k, nk, -(T)INFINITY),
                            ma_it, mb_it, it, &za, &zb, &ea, &eb, &dummy, &dummy);
            N_(js_log_step)(za, zb, ea, eb, pa, pb, la, lb, &u, &v, &dummy, &dummy);
            if (gar) N_(vstore_n)(gar + k, (u * gpa - kpg) * ea, nk);
            if (gbr) N_(vstore_n)(gbr + k, (v * gqb - kqg) * eb, nk);
        }
    }
    N_(dv_fence)(stream);
}

/* Diagonal Gaussian KL(N(mp, exp(lvp)) || N(mq, exp(lvq))) over n elements:
 *   l = 0.5 (lvq - lvp + r + (mp - mq)^2 / vq - 1),  r = exp(lvp - lvq), 1 / vq = exp(-lvq),
 *   dl/dmp = (mp - mq) / vq = -dl/dmq,  dl/dlvp = 0.5 (r - 1),
 *   dl/dlvq = 0.5 (1 - r - (mp - mq)^2 / vq).
 * mq / lvq NULL: 0 (the standard normal). Gradients (each optional) are scaled
 * by gscale; lelem (optional) gets the per-element loss. Returns sum l (float64
 * over blocks of FL_DIV_SUM_BLOCK). */
static double N_(gauss_kl_block)(const T *mp, const T *lvp, const T *mq, const T *lvq,
                                 T *gmp, T *glvp, T *gmq, T *glvq, T *lelem, int64_t n, T gscale) {
    VD total = N_(dv_dzero)();
    const T half = (T)0.5, hg = (T)0.5 * gscale;
    for (int64_t b = 0; b < n; b += FL_DIV_SUM_BLOCK) {
        const int64_t end = b + FL_DIV_SUM_BLOCK < n ? b + FL_DIV_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            const int64_t nk = end - k;
            V m = N_(vload_n)(mp + k, nk, 0), lv = N_(vload_n)(lvp + k, nk, 0);
            V dm = mq ? m - N_(vload_n)(mq + k, nk, 0) : m;
            V lq, iq, rr;
            if (lvq) {
                lq = N_(vload_n)(lvq + k, nk, 0);
                iq = N_(vexp)(-lq);
                rr = N_(vexp)(lv - lq);
            } else {
                lq = N_(vset1)(0);
                iq = N_(vset1)(1);
                rr = N_(vexp)(lv);
            }
            V gm = dm * iq;                 /* (mp - mq) / vq */
            V dm2 = dm * gm;
            V l = half * ((lq - lv) + (rr - (T)1) + dm2);
            if (nk < W) l = N_(vsel)(N_(vfirst)(nk), l, N_(vset1)(0));
            acc += l;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (gmp) N_(vstore_n)(gmp + k, gm * gscale, nk);
            if (glvp) N_(vstore_n)(glvp + k, (rr - (T)1) * hg, nk);
            if (gmq) N_(vstore_n)(gmq + k, gm * -gscale, nk);
            if (glvq) N_(vstore_n)(glvq + k, ((T)1 - rr - dm2) * hg, nk);
        }
        total = N_(dv_widen_add)(total, acc);
    }
    return N_(dv_dsum)(total);
}

/* Reconstruction loss over n elements: mode 0: (r - x)^2, gradient 2 (r - x);
 * mode 1: binary cross-entropy with logits r, l = max(r, 0) - r x + log1p(exp(-|r|)),
 * gradient sigmoid(r) - x. Gradient (optional) scaled by gscale; lelem optional.
 * Returns sum l in float64. */
static double N_(recon_block)(const T *r, const T *x, int mode, T *g, T *lelem, int64_t n, T gscale) {
    VD total = N_(dv_dzero)();
    const T g2 = (T)2 * gscale;
    for (int64_t b = 0; b < n; b += FL_DIV_SUM_BLOCK) {
        const int64_t end = b + FL_DIV_SUM_BLOCK < n ? b + FL_DIV_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            const int64_t nk = end - k;
            V rk = N_(vload_n)(r + k, nk, 0), xk = N_(vload_n)(x + k, nk, 0);
            V l, gk;
            if (mode == 0) {
                V d = rk - xk;
                l = d * d;
                gk = d * g2;
            } else {
                VI neg = rk < (T)0;
                V e = N_(vexp)(N_(vsel)(neg, rk, -rk));          /* exp(-|r|) in (0, 1] */
                V inv = (T)1 / ((T)1 + e);
                V sig = N_(vsel)(neg, e * inv, inv);              /* sigmoid(r) */
                l = N_(vsel)(neg, N_(vset1)(0), rk) - rk * xk + N_(vlog1p)(e);
                gk = (sig - xk) * gscale;
                if (nk < W) l = N_(vsel)(N_(vfirst)(nk), l, N_(vset1)(0));
            }
            acc += l;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (g) N_(vstore_n)(g + k, gk, nk);
        }
        total = N_(dv_widen_add)(total, acc);
    }
    return N_(dv_dsum)(total);
}

/* PyTorch's Gaussian negative log-likelihood over n elements, v = max(var, eps):
 *   l = 0.5 (log v + (x - t)^2 / v) + cst,
 *   dl/dx = (x - t) / v,  dl/dvar = 0.5 (1 / v - (x - t)^2 / v^2)
 * (the clamp passes the gradient straight through, as PyTorch's no-grad clamp).
 * var NULL: every element uses vconst, and *gv_sum (if given) gets sum dl/dvar
 * times gscale in float64 (a per-row variance). Gradients optional, scaled by gscale. */
static double N_(nll_block)(const T *x, const T *t, const T *var, T vconst, T *gx, T *gv,
                            T *lelem, int64_t n, T eps, T cst, T gscale, double *gv_sum) {
    VD total = N_(dv_dzero)(), gvs = total;
    const T half = (T)0.5, hg = (T)0.5 * gscale;
    const V vc = N_(vset1)(vconst < eps ? eps : vconst);  /* NaN stays NaN */
    const V lvc = N_(vlog)(vc);
    for (int64_t b = 0; b < n; b += FL_DIV_SUM_BLOCK) {
        const int64_t end = b + FL_DIV_SUM_BLOCK < n ? b + FL_DIV_SUM_BLOCK : n;
        V acc = N_(vset1)(0), accg = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            const int64_t nk = end - k;
            V d = N_(vload_n)(x + k, nk, 0) - N_(vload_n)(t + k, nk, 0);
            V v, lv;
            if (var) {
                v = N_(vload_n)(var + k, nk, 1);
                v = N_(vsel)(v < eps, N_(vset1)(eps), v);
                lv = N_(vlog)(v);
            } else {
                v = vc;
                lv = lvc;
            }
            V iv = (T)1 / v;
            V gxk = d * iv;
            V d2 = d * gxk;                               /* (x - t)^2 / v */
            V l = half * (lv + d2) + cst;
            V gvk = (((T)1 - d2) * iv) * hg;
            if (nk < W) {
                VI keep = N_(vfirst)(nk);
                l = N_(vsel)(keep, l, N_(vset1)(0));
                gvk = N_(vsel)(keep, gvk, N_(vset1)(0));
            }
            acc += l;
            if (gv_sum) accg += gvk;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (gx) N_(vstore_n)(gx + k, gxk * gscale, nk);
            if (gv) N_(vstore_n)(gv + k, gvk, nk);
        }
        total = N_(dv_widen_add)(total, acc);
        if (gv_sum) gvs = N_(dv_widen_add)(gvs, accg);
    }
    if (gv_sum) *gv_sum = N_(dv_dsum)(gvs);
    return N_(dv_dsum)(total);
}

#undef VD
