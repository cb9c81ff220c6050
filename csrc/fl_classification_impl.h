/* Template body (see fl_instantiate.h): softmax rows and elementwise sigmoid
 * losses. Rows are C-contiguous, C elements each. The gradient `g` may alias
 * the logits `x`: every loop reads an element before it writes the same one,
 * and a row's label logit is read before the row is overwritten. */

#include "fl_pointwise.h"

/* Fills a row with NaN: the softmax of a row whose max is NaN or infinite. */
static void N_(row_nan)(T *g, int64_t C) {
    for (int64_t k = 0; k < C; k++) g[k] = (T)NAN;
}

/* sum_k exp(x_k - m) for m = max(x), optionally storing the exponentials in e (may
 * alias x). m NaN or infinite (a NaN in the row, or only infinities) gives NaN, as
 * x - m would. pf (or NULL): C elements prefetched meanwhile, the next chunk, so that
 * its max pass reads cache instead of waiting on memory (with row_max's plain chains,
 * row_max's share of cross-entropy 2048 x 32000's gradient samples fell from 16% to 5%:
 * perf, AVX2). */
static double N_(row_sumexp)(const T *x, T *e, int64_t C, T m, const T *pf) {
    if (!(m > -(T)INFINITY && m < (T)INFINITY)) {
        if (e) N_(row_nan)(e, C);
        return NAN;
    }
    double s = 0.0;
    for (int64_t b = 0; b < C; b += FL_SUM_BLOCK) {
        int64_t end = b + FL_SUM_BLOCK < C ? b + FL_SUM_BLOCK : C;
        V acc = N_(vset1)(0);
        int64_t k = b;
        for (; k + W <= end; k += W) {
            if (pf) FL_PREFETCH(pf, k, 0);
            V ek = N_(vexp_le0)(N_(vload)(x + k) - m);
            if (e) N_(vstore)(e + k, ek);
            acc += ek;
        }
        if (k < end) {
            V ek = N_(vexp_le0)(N_(vload_part)(x + k, end - k, -(T)INFINITY) - m);
            if (e) N_(vstore_part)(e + k, ek, end - k);
            acc += ek;
        }
        s += N_(vhsum)(acc);
    }
    return s;
}

/* Running argmax over the chunks of a row (am NULL: not wanted), np.argmax's rule: the
 * first maximum, or the first NaN. Chunk [b, b + n), of max mc, holds the first maximum so
 * far when mc beats the max m of the chunks before it (greater, or the first NaN); an
 * all -inf row keeps *am = 0. Called while the chunk is in L1 and before it is overwritten. */
FL_INL void N_(amax_chunk)(int64_t *am, const T *x, int64_t b, int64_t n, T mc, T m) {
    if (am && (mc > m || (mc != mc && m == m))) *am = b + N_(row_find)(x + b, n, mc);
}
static int64_t N_(row_argmax)(const T *x, int64_t n) {
    int64_t am = 0;
    N_(amax_chunk)(&am, x, 0, n, N_(row_max)(x, n), -(T)INFINITY);
    return am;
}

/* The weighted distance of a row from its max, gathered chunk by chunk while each chunk
 * is in L1 (row_online, row_exp_chunked): st = sum_k w_k and sd = sum_k w_k (m - x_k),
 * m the row max, for w_k = (t ? t_k kt + add : 1) (cw ? cw_k : 1); a term with w_k == 0
 * counts 0, even at x_k = -inf. Label smoothing and probability targets take the loss
 * from sd, whose terms are all >= 0 (for w >= 0): m sum w - sum w x would cancel at large
 * logits. Each chunk is summed relative to its own max and moved to the running max M. */
typedef struct {
    const T *t, *cw;           /* the whole row's targets and class weights (or NULL) */
    T kt, add;
    double st, sd, sf, M;      /* sf: st of the chunks in M's frame; start with M = -inf */
} N_(wdev);

static void N_(wdev_chunk)(N_(wdev) *wd, const T *x, int64_t b, int64_t n, T mc) {
    const T ref = mc == -(T)INFINITY ? 0 : mc;   /* all -inf: its terms are +-inf or 0 */
    const T *t = wd->t ? wd->t + b : NULL, *cw = wd->cw ? wd->cw + b : NULL;
    for (int64_t b0 = 0; b0 < n; b0 += FL_SUM_BLOCK) {
        const int64_t end = b0 + FL_SUM_BLOCK < n ? b0 + FL_SUM_BLOCK : n;
        V a1 = N_(vset1)(0), a2 = N_(vset1)(0);
        for (int64_t k = b0; k < end; k += W) {
            const int64_t nk = end - k;
            V d = ref - N_(vload_n)(x + k, nk, ref);
            if (!t && !cw) {                      /* label smoothing without class weights */
                a2 += d;
                continue;
            }
            V wk = t ? N_(vload_n)(t + k, nk, 0) * wd->kt + wd->add : N_(vset1)(1);
            wk = N_(vkeep_first)(wk, nk);
            if (cw) wk *= N_(vload_n)(cw + k, nk, 0);
            a1 += wk;
            a2 += N_(vsel)(wk != (T)0, wk * d, N_(vset1)(0));
        }
        const double stb = !t && !cw ? (double)(end - b0) : N_(vhsum)(a1), sdb = N_(vhsum)(a2);
        wd->st += stb;
        wd->sd += sdb;
        if (mc == -(T)INFINITY) continue;
        if (b0 == 0 && (mc > wd->M || mc != mc)) {   /* NaN sticks, and makes sd NaN */
            if (wd->sf != 0) wd->sd += wd->sf * ((double)mc - wd->M);
            wd->M = mc;
        }
        if (mc != wd->M) wd->sd += stb * (wd->M - (double)mc);   /* (0 * an infinite target: none) */
        wd->sf += stb;
    }
}

/* The max m and s = sum exp(x - m) of a row (T, or half: kind, fl_vec.h's vload_src) in
 * one read, without weighted distances: groups of FL_GROUP vectors, each group's exp taken
 * from the running max M, which moves to the group's max when that is larger; the float64
 * lane sums are then scaled by exp(M_old - M_new) (rare: a few times a row unless the
 * logits rise along it). am (or NULL): the argmax, np.argmax's first maximum. The plain
 * max does not see NaN, so a row holding a NaN or +inf returns 0 (no result) and the
 * caller takes row_online's exact path, which gives those rows their meaning; else 1. */
FL_INL int N_(row_lse1)(const void *x, int kind, int64_t C, T *m_out, double *s_out, int64_t *am) {
    T M = -(T)INFINITY;
    N_(VDH) acc_lo = {0}, acc_hi = {0};   /* the float64 lane sums, in halves (dv_widen_halves) */
    V zs = N_(vset1)(0);                  /* the sum of every x - M: NaN iff a NaN was seen */
    T keep[FL_GROUP * W];
    for (int64_t k = 0; k < C; k += FL_GROUP * W) {
        /* n: a constant for whole groups, so their loads take no tail branches */
        const int64_t n = C - k >= FL_GROUP * W ? FL_GROUP * W : C - k;
        const V gm = C - k >= FL_GROUP * W ? N_(group_max)(x, kind, k, FL_GROUP * W, keep)
                                           : N_(group_max)(x, kind, k, n, keep);
        if (__builtin_expect(N_(vany)(gm > M), 0)) {
            const T mc = N_(vhmax)(gm);
            if (mc == (T)INFINITY) return 0;
            if (am) *am = k + N_(group_find)(x, kind, k, n, mc);
            if (M != -(T)INFINITY) {
                const double f = exp((double)M - (double)mc);
                acc_lo *= f;
                acc_hi *= f;
            }
            M = mc;
        }
        if (M == -(T)INFINITY) {          /* every element so far is -inf (or NaN): adds 0 */
            if (N_(group_nan)(x, kind, k, n)) return 0;
            continue;
        }
        V s = N_(vset1)(0);
        for (int i = 0; i < FL_GROUP && i * W < n; i++) {
            const V z = N_(group_vec)(x, kind, k, n, keep, i) - M;
            zs += z;
            s += N_(vexp_le0)(z);
        }
        N_(VDH) lo, hi;
        N_(dv_widen_halves)(s, &lo, &hi);
        acc_lo += lo;
        acc_hi += hi;
    }
    if (N_(vany)(zs != zs)) return 0;
    *m_out = M;
    *s_out = N_(dv_dsum)(N_(dv_join)(acc_lo, acc_hi));
    return 1;
}

/* Online (streaming) max and sum of exponentials: one read of the row, for
 * rows too long to stay in cache between passes. Returns s = sum exp(x - m); wd (or
 * NULL) gathers the weighted distance from the max on the way, am (or NULL) the argmax.
 * Without wd, row_lse1's one pass unless the row holds a NaN or +inf. */
static double N_(row_online)(const T *x, int64_t C, T *m_out, N_(wdev) *wd, int64_t *am) {
    double s1;
    if (!wd && N_(row_lse1)(x, FL_NATIVE, C, m_out, &s1, am)) return s1;
    if (am) *am = 0;
    T m = -(T)INFINITY;
    double s = 0.0;
    for (int64_t b = 0; b < C; b += FL_CHUNK) {
        int64_t n = C - b < FL_CHUNK ? C - b : FL_CHUNK;
        T mc = N_(row_max)(x + b, n);
        N_(amax_chunk)(am, x, b, n, mc, m);
        if (wd) N_(wdev_chunk)(wd, x + b, b, n, mc);
        if (mc != mc) { *m_out = mc; return NAN; }
        if (mc > m) { s *= exp((double)m - (double)mc); m = mc; }
        /* while m is -inf every element so far is -inf: they add exactly 0 */
        if (m != -(T)INFINITY) s += N_(row_sumexp)(x + b, NULL, n, m, NULL);
    }
    *m_out = m;
    return s;
}

/* g_k = e_k * scale - bconst * (w ? w_k : 1), where e_k is g_k itself (in_place,
 * the exponentials are already there) or exp(x_k - m). */
static void N_(row_grad)(const T *x, T *g, int64_t C, T m, T scale, int in_place,
                         const T *w, T bconst) {
    if (!in_place && !(m > -(T)INFINITY && m < (T)INFINITY)) { N_(row_nan)(g, C); return; }
    int64_t k = 0;
    for (; k + W <= C; k += W) {
        V e = in_place ? N_(vload)(g + k) : N_(vexp_le0)(N_(vload)(x + k) - m);
        V b = w ? N_(vload)(w + k) * bconst : N_(vset1)(bconst);
        N_(vstore)(g + k, e * scale - b);
    }
    if (k < C) {
        int64_t n = C - k;
        V e = in_place ? N_(vload_part)(g + k, n, 0) : N_(vexp_le0)(N_(vload_part)(x + k, n, 0) - m);
        V b = w ? N_(vload_part)(w + k, n, 0) * bconst : N_(vset1)(bconst);
        N_(vstore_part)(g + k, e * scale - b, n);
    }
}

/* Chunk [b, b + n) of a row of half values (kind: fl_half.h) into f + b as float32 (hf
 * NULL: nothing to do), and the reverse; float32 only (no half rows in float64). */
FL_INL void N_(half_in)(int kind, const uint16_t *hf, T *f, int64_t b, int64_t n) {
#if FL_DOUBLE
    (void)kind; (void)hf; (void)f; (void)b; (void)n;
#else
    if (hf) fl_half_to_float(kind, hf + b, f + b, n);
#endif
}
FL_INL void N_(half_out)(int kind, const T *f, uint16_t *hf, int64_t b, int64_t n) {
#if FL_DOUBLE
    (void)kind; (void)f; (void)hf; (void)b; (void)n;
#else
    if (hf) fl_float_to_half(kind, f + b, hf + b, n);
#endif
}

/* Pass A of a row whose exponentials are kept (its gradient is wanted): per chunk c
 * of FL_CHUNK elements, the chunk max cm[c] and exp(x - cm[c]) into e (may alias x).
 * Each chunk is read from memory once and is still in L1 for its exp pass; the row's
 * max m goes to *m_out and the result is s = sum exp(x - m). Chunk c's exponentials
 * are exp(cm[c] - m) times too large: chunk_factor. A row whose max is NaN or +inf, or
 * all of whose entries are -inf, gives NaN. wd, am: as row_online's. hx (or NULL): the
 * row as half values (kind), each chunk converted into e when it is reached and read
 * there (x unused): the row is read once at its own width, the next chunk prefetched
 * meanwhile. */
static double N_(row_exp_chunked)(const T *x, T *e, int64_t C, T *m_out, T *cm, N_(wdev) *wd,
                                  int64_t *am, const uint16_t *hx, int kind) {
    if (hx) x = e;
    double sc[FL_MAX_CHUNKS];
    const int64_t nc = (C + FL_CHUNK - 1) / FL_CHUNK;
    T m = -(T)INFINITY;
    for (int64_t c = 0; c < nc; c++) {
        const int64_t b = c * FL_CHUNK, n = C - b < FL_CHUNK ? C - b : FL_CHUNK;
        N_(half_in)(kind, hx, e, b, n);
        const T mc = N_(row_max)(x + b, n);
        cm[c] = mc;
        N_(amax_chunk)(am, x, b, n, mc, m);            /* before e (maybe x) is written */
        if (wd) N_(wdev_chunk)(wd, x + b, b, n, mc);
        if (mc == -(T)INFINITY) {          /* all -inf: probabilities exactly 0 */
            memset(e + b, 0, (size_t)n * sizeof(T));
            sc[c] = 0.0;
            continue;
        }
        /* prefetched meanwhile: n elements of T from there, the next chunk (a half row's next two) */
        sc[c] = N_(row_sumexp)(x + b, e + b, n, mc, hx ? (const T *)(hx + b + n) : x + b + n);
        if (mc > m || mc != mc) m = mc;    /* NaN sticks */
    }
    *m_out = m;
    if (!(m > -(T)INFINITY && m < (T)INFINITY)) return NAN;
    double s = 0.0;
    for (int64_t c = 0; c < nc; c++)
        if (cm[c] != -(T)INFINITY) s += sc[c] * exp((double)cm[c] - (double)m);
    return s;
}
FL_INL double N_(chunk_factor)(T cmc, T m) {
    return cmc == -(T)INFINITY ? 0.0 : exp((double)cmc - (double)m);
}

/* The gradient pass of a softmax row: g = e * scale - bconst * (w ? w : 1), where e are
 * the kept exponentials of row_exp_chunked (keep: e is g itself, rescaled per chunk) or
 * are recomputed from x (rows too long to keep). hg (or NULL; keep only): each chunk of g
 * also converted into half values (kind) while it is in L1. */
static void N_(row_grad_pass)(const T *x, T *g, int64_t C, T m, const T *cm, int keep,
                              double scale, const T *w, T bconst, uint16_t *hg, int kind) {
    if (!(m > -(T)INFINITY && m < (T)INFINITY)) {
        N_(row_nan)(g, C);
        N_(half_out)(kind, g, hg, 0, C);
        return;
    }
    if (!keep) { N_(row_grad)(x, g, C, m, (T)scale, 0, w, bconst); return; }
    for (int64_t c = 0, b = 0; b < C; c++, b += FL_CHUNK) {
        const int64_t n = C - b < FL_CHUNK ? C - b : FL_CHUNK;
        N_(row_grad)(NULL, g + b, n, m, (T)(scale * N_(chunk_factor)(cm[c], m)), 1,
                     w ? w + b : NULL, bconst);
        N_(half_out)(kind, g, hg, b, n);
    }
}

/* Gemma-2 soft capping: x -> cap * tanh(x / cap), into xs. Scalar libm tanh:
 * an option, not the hot path. */
static void N_(softcap_row)(const T *x, T *xs, int64_t C, T cap) {
    for (int64_t k = 0; k < C; k++) xs[k] = (T)((double)cap * tanh((double)x[k] / (double)cap));
}
/* Chain rule through the cap: d xs / dx = 1 - (xs / cap)^2. */
static void N_(softcap_grad)(T *g, const T *xs, int64_t C, T cap) {
    T inv = (T)1 / cap;
    for (int64_t k = 0; k < C; k++) { T u = xs[k] * inv; g[k] *= (T)1 - u * u; }
}

/* xent_label_rows for rows of at most FL_SMALL_C (float64: FL_SMALL_C_F64) classes: a
 * vector holds one class of W rows (block_load_t, block_store_t), so max, exp, sum, log
 * and the rows' losses (label_row_loss_v: float64 lanes) run across rows instead of
 * wasting most lanes on a short row. */
FL_LABEL_ROW_LOSS(N_(label_row_loss_v), VD)
FL_PROB_ROW_LOSS(N_(prob_row_loss_v), VD)
typedef double N_(VDU) __attribute__((vector_size(W * 8), aligned(8), may_alias));
static void N_(xent_label_small)(const T *x, T *g, int64_t n, const int64_t *y,
                                 const fl_xent_params *p, double *loss, const fl_xent_stats *st) {
    const int64_t C = p->C;
    const T *cw = (const T *)p->class_weight;
    const double eps = p->smoothing, gs = p->gscale;
    const T bconst = (T)(gs * eps / (double)C);
    V xt[FL_SMALL_C];
    for (int64_t r0 = 0; r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        const T *xb = x + r0 * C;
        /* the labels as lanes of T (exact: < FL_SMALL_C; compared as T, which every level
         * does in one instruction): an ignored row (and a lane past the rows) is -1 */
        T yb[W];
        for (int j = 0; j < W; j++)
            yb[j] = j < nr && y[r0 + j] != p->ignore_index ? (T)y[r0 + j] : -1;
        const V yv = N_(vload)(yb);
        const VI ign = yv < 0;
        const int any_ign = N_(vany)(ign);
        N_(block_load_t)(xb, nr, C, xt);
        /* each row's label logit and weight (selected: cheaper than W scalar reads) */
        V m = xt[0], s = N_(vset1)(0), sd = N_(vset1)(0), xy = N_(vset1)(0), wy = N_(vset1)(1);
        VI am = {0};
        for (int64_t k = 0; k < C; k++) {
            const VI yk = yv == (T)k;
            xy = N_(vsel)(yk, xt[k], xy);
            if (cw) wy = N_(vsel)(yk, N_(vset1)(cw[k]), wy);
            if (k == 0) continue;
            if (st) am = N_(vamax_step)(am, m, xt[k], k);
            m = N_(vmax_nan)(m, xt[k]);
        }
        for (int64_t k = 0; k < C; k++) {
            if (eps > 0 && (!cw || cw[k] != 0)) sd += cw ? (m - xt[k]) * cw[k] : m - xt[k];
            xt[k] = N_(vexp_le0)(xt[k] - m);   /* m not finite: NaN lanes, see s */
            s += xt[k];
        }
        /* a row whose max is NaN or infinite (a NaN, +inf, or only -inf) is NaN, as its
         * x - m would make it: vexp_le0 does not promise NaN there */
        s = N_(vsel)((m > -(T)INFINITY) & (m < (T)INFINITY), s, N_(vset1)((T)NAN));
        const V logs = N_(vlog)(s);
        const VD wyd = __builtin_convertvector(wy, VD), md = __builtin_convertvector(m, VD);
        const VD logsd = __builtin_convertvector(logs, VD);
        VD a;
        const VD l = N_(label_row_loss_v)(p, wyd, md, logsd, __builtin_convertvector(xy, VD),
                                          __builtin_convertvector(sd, VD), &a);
        if (nr == W) *(N_(VDU) *)(loss + r0) = l;
        for (int j = 0; j < nr; j++) {
            if (nr < W) loss[r0 + j] = l[j];
            if (yb[j] < 0) loss[r0 + j] = 0.0;
            if (st) fl_put_stats(st, r0 + j, (double)m[j], (double)logs[j], am[j],
                                 yb[j] >= 0 && am[j] == y[r0 + j]);
        }
        if (!g) continue;
        T *gb = g + r0 * C;
        const V scale = N_(vsel)(ign, N_(vset1)(0),
                                 __builtin_convertvector(gs * a / __builtin_convertvector(s, VD), V));
        const V cy = __builtin_convertvector(gs * (1.0 - eps) * wyd, V);   /* at the label */
        for (int64_t k = 0; k < C; k++) {
            V gk = xt[k] * scale - (cw ? bconst * cw[k] : bconst);
            gk -= N_(vsel)(yv == (T)k, cy, N_(vset1)(0));
            xt[k] = any_ign ? N_(vsel)(ign, N_(vset1)(0), gk) : gk;
        }
        N_(block_store_t)(gb, nr, C, xt);
    }
}

/* What the label takes off its own element of a row's gradient (the softmax pass's
 * gscale (1 - eps) w_y), in T as the element is. */
FL_INL T N_(label_term)(const fl_xent_params *p, double wy) {
    return (T)(p->gscale * (1.0 - p->smoothing) * wy);
}

/* Row r of xent_label_rows on the row path (any class count and option): its loss
 * (already weighted) into loss[r]; with g, the gradient of loss[r] * gscale; with st,
 * its statistics (an ignored row's too: its lse and argmax, not correct). scratch: C
 * elements of per-thread memory, used only with softcap. */
static void N_(xent_label_row)(const T *x, T *g, int64_t r, const int64_t *y,
                               const fl_xent_params *p, double *loss, T *scratch,
                               const fl_xent_stats *st) {
    const int64_t C = p->C;
    const T *cw = (const T *)p->class_weight;
    const double eps = p->smoothing, gs = p->gscale;
    const T cap = (T)p->softcap;
    const int keep = C <= FL_MAX_CHUNKS * FL_CHUNK;
    T cm[FL_MAX_CHUNKS];
    const T *xr = x + r * C;
    T *gr = g ? g + r * C : NULL;
    const int64_t yr = y[r];
    const int counted = yr != p->ignore_index;
    if (counted || st) {
        /* the argmax of the logits as given: the cap's rounding can tie logits far above it */
        int64_t am = st && cap > 0 ? N_(row_argmax)(xr, C) : 0;
        if (cap > 0) { N_(softcap_row)(xr, scratch, C, cap); xr = scratch; }
        T *gk = counted ? gr : NULL;             /* an ignored row: its statistics alone */
        const double xy = counted ? xr[yr] : 0.0;   /* read before gk (maybe x) is written */
        N_(wdev) wd = {NULL, cw, 1, 0, 0.0, 0.0, 0.0, -INFINITY};
        N_(wdev) *wdp = eps > 0 && counted ? &wd : NULL;
        int64_t *amp = st && cap == 0 ? &am : NULL;
        T m;
        const double s = gk && keep ? N_(row_exp_chunked)(xr, gk, C, &m, cm, wdp, amp, NULL, 0)
                                    : N_(row_online)(xr, C, &m, wdp, amp);
        if (st) fl_put_stats(st, r, (double)m, log(s), am, counted && am == yr);
        if (counted) {
            const double wy = cw ? (double)cw[yr] : 1.0;
            double a;
            loss[r] = fl_label_row_loss(p, wy, (double)m, log(s), xy, wd.sd, &a);
            if (gr) {
                N_(row_grad_pass)(xr, gr, C, m, cm, keep, gs * a / s, cw,
                                  (T)(gs * eps / (double)C), NULL, 0);
                gr[yr] -= N_(label_term)(p, wy);
                if (cap > 0) N_(softcap_grad)(gr, scratch, C, cap);
            }
            return;
        }
    }
    loss[r] = 0.0;                               /* counts for nothing: zeroed after its stats */
    if (gr) memset(gr, 0, (size_t)C * sizeof(T));
}

/* The blocked row path (xent_label_mid, xent_prob_rows, softmax_rows): rows of at most
 * FL_MID_C elements (labels: above FL_SMALL_C, float64 FL_SMALL_C_F64, which
 * xent_label_small takes), in blocks of nr <= W rows, each step (max, sum of exponentials,
 * log, ...) taken across the block's rows before the next. The rows' horizontal max and sum
 * are one transposition of W row vectors each and their logs one vlog: independent work,
 * where the row path's chains a row (a horizontal max, a float64 lane sum, libm's log) were
 * most of a 100-class row's time. Lane j is row j, and a row's result does not depend on its
 * block. The sums and the log are in T, as in xent_label_small: at most FL_MID_C terms a
 * sum, as row_sumexp's blocks of FL_SUM_BLOCK. Rows holding a NaN or whose max is infinite
 * take the row path, which gives them their meaning: the callers do them after the block's
 * other rows and write them only then. block_max, vrows_max and vrows_sum: fl_vec.h (the
 * divergences' entropy_mid takes them too). */

/* sum_k exp(x_k - m_j) of each row j < nr not marked skip[j] (the others: 0), the
 * exponentials stored into eb's rows (or NULL; eb may be xb). The next block's rows (W rows
 * on) are prefetched meanwhile: block_max waited on memory. */
FL_INL V N_(block_sumexp)(const T *xb, T *eb, int64_t nr, int64_t C, V m, const int *skip) {
    V sv[W];
    for (int j = 0; j < W; j++) {
        V s = N_(vset1)(0);
        const T *xr = xb + j * C;
        T *er = eb ? eb + j * C : NULL;
        for (int64_t k = 0; j < nr && !skip[j] && k < C; k += W) {
            FL_PREFETCH(xr, W * C + k, 0);
            if (er) FL_PREFETCH(er, W * C + k, 1);
            const V e = N_(vexp_le0)(N_(vload_n)(xr + k, C - k, -(T)INFINITY) - m[j]);
            if (er) N_(vstore_n)(er + k, e, C - k);
            s += e;
        }
        sv[j] = s;
    }
    return N_(vrows_sum)(sv);
}

/* The weighted distance from the max (wdev's) of each row j < nr not skipped: sd_j =
 * sum_k w_k (m_j - x_k) and, with st, st_j = sum_k w_k, for w_k = (tb ? t_k kt + add : 1)
 * (cw ? cw_k : 1), tb the block's target rows (or NULL: label smoothing); w_k = 0 adds
 * nothing, even at x_k = -inf. */
FL_INL V N_(block_wdist)(const T *xb, const T *tb, T kt, T add, int64_t nr, int64_t C, V m,
                         const int *skip, const T *cw, V *st) {
    V dv[W], sv[W];
    for (int j = 0; j < W; j++) {
        V d = N_(vset1)(0), a = N_(vset1)(0);
        for (int64_t k = 0; j < nr && !skip[j] && k < C; k += W) {
            const int64_t nk = C - k;
            V w = tb ? N_(vload_n)(tb + j * C + k, nk, 0) * kt + add : N_(vset1)(1);
            w = N_(vkeep_first)(w, nk);
            if (cw) w *= N_(vload_n)(cw + k, nk, 0);
            const V v = N_(vload_n)(xb + j * C + k, nk, 0);
            d += N_(vsel)(w != (T)0, w * (m[j] - v), N_(vset1)(0));
            a += w;
        }
        dv[j] = d;
        sv[j] = a;
    }
    if (st) *st = N_(vrows_sum)(sv);
    return N_(vrows_sum)(dv);
}

/* xent_label_rows on the blocked row path (above), without softcap; ignored rows take the
 * row path (xent_label_row) too. */
static void N_(xent_label_mid)(const T *x, T *g, int64_t n, const int64_t *y,
                               const fl_xent_params *p, double *loss, T *scratch,
                               const fl_xent_stats *st) {
    const int64_t C = p->C;
    const T *cw = (const T *)p->class_weight;
    const double eps = p->smoothing, gs = p->gscale;
    const T bconst = (T)(gs * eps / (double)C);
    for (int64_t r0 = 0; r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        const T *xb = x + r0 * C;
        VI fin;
        const V m = N_(block_max)(xb, nr, C, &fin);
        int row_path[W];
        T xyb[W], wyb[W];
        int64_t am[W];
        for (int j = 0; j < W; j++) {
            row_path[j] = j >= nr || !fin[j] || y[r0 + j] == p->ignore_index;
            xyb[j] = row_path[j] ? 0 : xb[j * C + y[r0 + j]];   /* before g (maybe x) is written */
            wyb[j] = row_path[j] || !cw ? 1 : cw[y[r0 + j]];
            /* no NaN in the row: its first maximum is np.argmax's */
            am[j] = st && !row_path[j] ? N_(row_find)(xb + j * C, C, m[j]) : 0;
        }
        const V sd = eps > 0 ? N_(block_wdist)(xb, NULL, 1, 0, nr, C, m, row_path, cw, NULL)
                             : N_(vset1)(0);
        const V s = N_(block_sumexp)(xb, g ? g + r0 * C : NULL, nr, C, m, row_path);
        const V logs = N_(vlog)(s);
        VD a;
        const VD l = N_(label_row_loss_v)(p, __builtin_convertvector(N_(vload)(wyb), VD),
                                          __builtin_convertvector(m, VD),
                                          __builtin_convertvector(logs, VD),
                                          __builtin_convertvector(N_(vload)(xyb), VD),
                                          __builtin_convertvector(sd, VD), &a);
        const V scale = __builtin_convertvector(gs * a / __builtin_convertvector(s, VD), V);
        for (int j = 0; j < nr; j++) {
            const int64_t r = r0 + j;
            if (row_path[j]) {
                N_(xent_label_row)(x, g, r, y, p, loss, scratch, st);
                continue;
            }
            loss[r] = l[j];
            if (st) fl_put_stats(st, r, (double)m[j], (double)logs[j], am[j], am[j] == y[r]);
            if (!g) continue;
            T *gr = g + r * C;
            N_(row_grad)(NULL, gr, C, m[j], scale[j], 1, cw, bconst);
            gr[y[r]] -= N_(label_term)(p, wyb[j]);
        }
    }
}

/* Softmax cross-entropy with integer labels, rows [0, n): xent_label_row for each row;
 * without softcap, rows of at most FL_SMALL_C (float64: FL_SMALL_C_F64) classes in
 * xent_label_small, of at most FL_MID_C in xent_label_mid. */
static void N_(xent_label_rows)(const T *x, T *g, int64_t n, const int64_t *y,
                                const fl_xent_params *p, double *loss, T *scratch,
                                const fl_xent_stats *st) {
    const int64_t C = p->C;
    if (N_(small_rows)(C) && p->softcap == 0) {
        N_(xent_label_small)(x, g, n, y, p, loss, st);
        return;
    }
    if (C <= FL_MID_C && p->softcap == 0) {
        N_(xent_label_mid)(x, g, n, y, p, loss, scratch, st);
        return;
    }
    for (int64_t r = 0; r < n; r++) N_(xent_label_row)(x, g, r, y, p, loss, scratch, st);
}

#if !FL_DOUBLE
/* xent_label_half with a gradient g (half values, kind), for rows of more than FL_MID_C
 * and at most FL_MAX_CHUNKS * FL_CHUNK classes, without softcap: each chunk of a row is
 * converted into the row's float32 scratch (C elements) when row_exp_chunked reaches it,
 * and each chunk of the gradient is converted back while it is in L1 (row_grad_pass), so
 * the row is read and written once at its own width, with no pass over memory that only
 * converts. The label's element, taken off in float32 after the pass, is converted
 * again. Same results as xent_label_rows on the float32 upcast, its gradient then
 * rounded; g may alias x (a row is read before it is written). */
static void N_(xent_label_half_grad)(int kind, const uint16_t *x, uint16_t *g, int64_t n,
                                     const int64_t *y, const fl_xent_params *p, double *loss,
                                     T *scratch, const fl_xent_stats *st) {
    const int64_t C = p->C;
    const T *cw = (const T *)p->class_weight;
    const double eps = p->smoothing, gs = p->gscale;
    T cm[FL_MAX_CHUNKS];
    for (int64_t r = 0; r < n; r++) {
        const uint16_t *xr = x + r * C;
        uint16_t *gr = g + r * C;
        const int64_t yr = y[r];
        int64_t am = 0;
        T m;
        if (yr == p->ignore_index) {             /* its statistics alone, loss and gradient 0 */
            loss[r] = 0.0;
            if (st) {
                fl_half_to_float(kind, xr, scratch, C);
                const double s = N_(row_online)(scratch, C, &m, NULL, &am);
                fl_put_stats(st, r, (double)m, log(s), am, 0);
            }
            memset(gr, 0, (size_t)C * sizeof(uint16_t));
            continue;
        }
        const double xy = N_(src_one)(xr, kind, yr);
        N_(wdev) wd = {NULL, cw, 1, 0, 0.0, 0.0, 0.0, -INFINITY};
        const double s = N_(row_exp_chunked)(NULL, scratch, C, &m, cm, eps > 0 ? &wd : NULL,
                                             st ? &am : NULL, xr, kind);
        if (st) fl_put_stats(st, r, (double)m, log(s), am, am == yr);
        const double wy = cw ? (double)cw[yr] : 1.0;
        double a;
        loss[r] = fl_label_row_loss(p, wy, (double)m, log(s), xy, wd.sd, &a);
        N_(row_grad_pass)(NULL, scratch, C, m, cm, 1, gs * a / s, cw, (T)(gs * eps / (double)C),
                          gr, kind);
        scratch[yr] -= N_(label_term)(p, wy);
        fl_float_to_half(kind, scratch + yr, gr + yr, 1);
    }
}

/* xent_label_rows on float16 / bfloat16 rows (kind: fl_half.h), without softcap, for rows
 * of more than FL_MID_C classes (the other cases convert a block into float32 first).
 * With a gradient g: xent_label_half_grad. Loss only (and without label smoothing):
 * row_lse1 reads the half values straight into registers, so each row is read once at
 * its own width; a row holding a NaN or +inf is converted into scratch (C elements) for
 * row_online's exact path. Same results as xent_label_rows on the float32 upcast. */
static void N_(xent_label_half)(int kind, const uint16_t *x, uint16_t *g, int64_t n,
                                const int64_t *y, const fl_xent_params *p, double *loss,
                                T *scratch, const fl_xent_stats *st) {
    if (g) {
        N_(xent_label_half_grad)(kind, x, g, n, y, p, loss, scratch, st);
        return;
    }
    const int64_t C = p->C;
    const T *cw = (const T *)p->class_weight;
    for (int64_t r = 0; r < n; r++) {
        const uint16_t *xr = x + r * C;
        const int64_t yr = y[r];
        const int counted = yr != p->ignore_index;
        loss[r] = 0.0;
        if (!counted && !st) continue;
        int64_t am = 0;
        T m;
        double s;
        int ok = kind == FL_BFLOAT16 ? N_(row_lse1)(xr, FL_BFLOAT16, C, &m, &s, st ? &am : NULL)
                                     : N_(row_lse1)(xr, FL_FLOAT16, C, &m, &s, st ? &am : NULL);
        if (!ok) {
            fl_half_to_float(kind, xr, scratch, C);
            s = N_(row_online)(scratch, C, &m, NULL, st ? &am : NULL);
        }
        if (st) fl_put_stats(st, r, (double)m, log(s), am, counted && am == yr);
        if (counted) {
            double a;
            loss[r] = fl_label_row_loss(p, cw ? (double)cw[yr] : 1.0, (double)m, log(s),
                                        (double)N_(src_one)(xr, kind, yr), 0.0, &a);
        }
    }
}

/* softmax_rows on float16 / bfloat16 rows (kind) of more than FL_MID_C and at most
 * FL_MAX_CHUNKS * FL_CHUNK elements, out (or NULL: the lse alone) in the same half format,
 * each row read once at its own width: softmax through row_exp_chunked and row_grad_pass a
 * chunk at a time (as xent_label_half_grad); the lse alone and log-softmax from row_lse1's
 * one read (a row holding NaN or +inf converted into scratch for row_online), log-softmax's
 * chunks then converted in and out of scratch. Same results as softmax_rows on the float32
 * upcast, rounded; out may alias x. scratch: C elements. */
static void N_(softmax_half)(int kind, const uint16_t *x, uint16_t *out, int64_t n, int64_t C,
                             int log_out, double *lse, T *scratch) {
    T cm[FL_MAX_CHUNKS];
    for (int64_t r = 0; r < n; r++) {
        const uint16_t *xr = x + r * C;
        uint16_t *orow = out ? out + r * C : NULL;
        T m;
        double s;
        if (orow && !log_out) {
            s = N_(row_exp_chunked)(NULL, scratch, C, &m, cm, NULL, NULL, xr, kind);
            lse[r] = fl_row_lse((double)m, log(s));
            N_(row_grad_pass)(NULL, scratch, C, m, cm, 1, 1.0 / s, NULL, 0, orow, kind);
            continue;
        }
        const int ok = kind == FL_BFLOAT16 ? N_(row_lse1)(xr, FL_BFLOAT16, C, &m, &s, NULL)
                                           : N_(row_lse1)(xr, FL_FLOAT16, C, &m, &s, NULL);
        if (!ok) {
            fl_half_to_float(kind, xr, scratch, C);
            s = N_(row_online)(scratch, C, &m, NULL, NULL);
        }
        lse[r] = fl_row_lse((double)m, log(s));
        if (!orow) continue;
        const T ls = (T)log(s);      /* softmax_row's log-softmax: (x - m) - log s */
        for (int64_t b = 0; b < C; b += FL_CHUNK) {
            const int64_t nk = C - b < FL_CHUNK ? C - b : FL_CHUNK;
            N_(half_in)(kind, xr, scratch, b, nk);
            for (int64_t k = b; k < b + nk; k++) scratch[k] = (scratch[k] - m) - ls;
            N_(half_out)(kind, scratch, orow, b, nk);
        }
    }
}

/* The check of integer labels (fastloss/_checks.py's check_label_array) in one pass: the
 * number of counted labels (!= ignore) into *counted, and the index of the first counted
 * label outside [0, C), or -1. Branch-free (one unsigned compare catches both ends), so
 * the compiler vectorises it where the level has 64-bit compares; float32's
 * instantiation only, the labels having no T. */
static int64_t N_(label_scan)(const int64_t *y, int64_t n, int64_t C, int64_t ignore,
                              int64_t *counted) {
    int64_t count = 0, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t c = y[i] != ignore;
        count += c;
        bad |= c & ((uint64_t)y[i] >= (uint64_t)C);
    }
    *counted = count;
    if (bad)
        for (int64_t i = 0; i < n; i++)                  /* the error's path: the first */
            if (y[i] != ignore && (uint64_t)y[i] >= (uint64_t)C) return i;
    return -1;
}
#endif

/* Softmax cross-entropy with integer labels for a class axis that is not the last:
 * one slab of C classes x D positions, class c of position d at x[c * D + d] (PyTorch's
 * (N, C, d1, ...) layout), columns [d0, d1). A vector holds W neighbouring positions, so
 * no transpose is needed; each pass over the C classes of a column block stays in L1.
 * y, loss and st (or NULL) hold the slab's D labels, losses and statistics; g (same
 * layout as x) may alias x. */
static void N_(xent_label_cols)(const T *x, T *g, int64_t C, int64_t D, int64_t d0, int64_t d1,
                                const int64_t *y, const fl_xent_params *p, double *loss,
                                const fl_xent_stats *st) {
    const T *cw = (const T *)p->class_weight;
    const double eps = p->smoothing, gs = p->gscale;
    const T bconst = (T)(gs * eps / (double)C);
    for (int64_t d = d0; d < d1; d += W) {
        const int64_t nr = d1 - d < W ? d1 - d : W;
        double xy[W];
        for (int j = 0; j < nr; j++) {        /* read before g (maybe x) is written */
            const int64_t yj = y[d + j];
            xy[j] = yj == p->ignore_index ? 0.0 : (double)x[yj * D + d + j];
        }
        V m = N_(vset1)(-(T)INFINITY), s = N_(vset1)(0), sd = N_(vset1)(0);
        VI am = {0};
        for (int64_t c = 0; c < C; c++) {
            const V v = N_(vload_n)(x + c * D + d, nr, 0);
            if (st) am = N_(vamax_step)(am, m, v, c);
            m = N_(vmax_nan)(m, v);
        }
        for (int64_t c = 0; c < C; c++) {
            V v = N_(vload_n)(x + c * D + d, nr, 0);
            if (eps > 0 && (!cw || cw[c] != 0)) sd += cw ? (m - v) * cw[c] : m - v;
            V e = N_(vexp)(v - m);
            s += e;
            if (g) N_(vstore_n)(g + c * D + d, e, nr);
        }
        V logs = N_(vlog)(s);
        T scale[W] = {0};
        for (int j = 0; j < nr; j++) {
            const int64_t yj = y[d + j];
            if (st) fl_put_stats(st, d + j, (double)m[j], (double)logs[j], am[j],
                                 yj != p->ignore_index && am[j] == yj);
            if (yj == p->ignore_index) { loss[d + j] = 0.0; continue; }
            double a;
            loss[d + j] = fl_label_row_loss(p, cw ? (double)cw[yj] : 1.0, (double)m[j],
                                            (double)logs[j], xy[j], (double)sd[j], &a);
            scale[j] = (T)(gs * a / (double)s[j]);
        }
        if (!g) continue;
        const V vscale = N_(vload)(scale);
        for (int64_t c = 0; c < C; c++) {
            V gv = N_(vload_n)(g + c * D + d, nr, 0) * vscale - (cw ? bconst * cw[c] : bconst);
            N_(vstore_n)(g + c * D + d, gv, nr);
        }
        for (int j = 0; j < nr; j++) {
            const int64_t yj = y[d + j];
            if (yj == p->ignore_index) {
                for (int64_t c = 0; c < C; c++) g[c * D + d + j] = 0;
            } else {
                g[yj * D + d + j] -= N_(label_term)(p, cw ? (double)cw[yj] : 1.0);
            }
        }
    }
}

/* Softmax cross-entropy with probability targets t (same layout as x). With
 * smoothing eps the target is (1 - eps) t + eps / C. The loss is
 * sum_k w_k t'_k (m - x_k) + st log s, relative to the row max m (see fl_label_row_loss).
 * stats (or NULL): as xent_label_rows', correct when the argmax is the target's. */

/* The gradient of a row, g = e f - gs w_k t'_k: e the kept exponentials (keep: g itself,
 * chunk c's f scaled by chunk_factor(cm[c], m)) or recomputed from x. */
static void N_(prob_row_grad)(const T *xr, const T *tr, T *gr, int64_t C, T m, const T *cm,
                              int keep, double scale, T kt, T add, const T *cw, double gs) {
    const T gsT = (T)gs;
    if (!(m > -(T)INFINITY && m < (T)INFINITY)) { N_(row_nan)(gr, C); return; }
    for (int64_t c = 0, b = 0; b < C; c++, b += FL_CHUNK) {
        const int64_t end = C - b < FL_CHUNK ? C : b + FL_CHUNK;
        const T f = (T)(keep ? scale * N_(chunk_factor)(cm[c], m) : scale);
        for (int64_t k = b; k < end; k += W) {
            int64_t nk = end - k;
            V e = keep ? N_(vload_n)(gr + k, nk, 0) : N_(vexp_le0)(N_(vload_n)(xr + k, nk, 0) - m);
            V tk = N_(vload_n)(tr + k, nk, 0) * kt + add;
            if (cw) tk *= N_(vload_n)(cw + k, nk, 0);
            N_(vstore_n)(gr + k, e * f - tk * gsT, nk);
        }
    }
}

/* Row r on the row path (any class count and option). */
static void N_(xent_prob_row)(const T *x, const T *t, T *g, int64_t r, const fl_xent_params *p,
                              double *loss, T *scratch, const fl_xent_stats *stats) {
    const int64_t C = p->C;
    const T *cw = (const T *)p->class_weight;
    const double gs = p->gscale;
    const T kt = (T)(1.0 - p->smoothing), add = (T)(p->smoothing / (double)C);
    const T cap = (T)p->softcap;
    const int keep = C <= FL_MAX_CHUNKS * FL_CHUNK;
    T cm[FL_MAX_CHUNKS];
    const T *xr = x + r * C, *tr = t + r * C;
    T *gr = g ? g + r * C : NULL;
    int64_t am = stats && cap > 0 ? N_(row_argmax)(xr, C) : 0;   /* as xent_label_row's */
    if (cap > 0) { N_(softcap_row)(xr, scratch, C, cap); xr = scratch; }
    /* st = sum_k w_k t'_k; sd = sum_k w_k t'_k (m - x_k) */
    N_(wdev) wd = {tr, cw, kt, add, 0.0, 0.0, 0.0, -INFINITY};
    int64_t *amp = stats && cap == 0 ? &am : NULL;
    T m;
    const double s = gr && keep ? N_(row_exp_chunked)(xr, gr, C, &m, cm, &wd, amp, NULL, 0)
                                : N_(row_online)(xr, C, &m, &wd, amp);
    if (stats) fl_put_stats(stats, r, (double)m, log(s), am, am == N_(row_argmax)(tr, C));
    double a;
    loss[r] = fl_prob_row_loss(p, (double)m, log(s), wd.sd, wd.st, &a);
    if (!gr) return;
    N_(prob_row_grad)(xr, tr, gr, C, m, cm, keep, gs * a / s, kt, add, cw, gs);
    if (cap > 0) N_(softcap_grad)(gr, scratch, C, cap);
}

/* xent_prob_row for rows [0, n); rows of at most FL_MID_C classes without softcap on the
 * blocked row path (above xent_label_mid), the same formulas lane by lane. */
static void N_(xent_prob_rows)(const T *x, const T *t, T *g, int64_t n,
                               const fl_xent_params *p, double *loss, T *scratch,
                               const fl_xent_stats *stats) {
    const int64_t C = p->C;
    const T *cw = (const T *)p->class_weight;
    const double gs = p->gscale;
    const T kt = (T)(1.0 - p->smoothing), add = (T)(p->smoothing / (double)C);
    const int mid = C <= FL_MID_C && p->softcap == 0;
    for (int64_t r0 = 0; mid && r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        const T *xb = x + r0 * C, *tb = t + r0 * C;
        VI fin;
        const V m = N_(block_max)(xb, nr, C, &fin);
        int row_path[W];
        int64_t am[W];
        for (int j = 0; j < W; j++) {
            row_path[j] = j >= nr || !fin[j];
            am[j] = stats && !row_path[j] ? N_(row_find)(xb + j * C, C, m[j]) : 0;
        }
        V st;
        const V sd = N_(block_wdist)(xb, tb, kt, add, nr, C, m, row_path, cw, &st);
        const V s = N_(block_sumexp)(xb, g ? g + r0 * C : NULL, nr, C, m, row_path);
        const V logs = N_(vlog)(s);
        const VD md = __builtin_convertvector(m, VD), ld = __builtin_convertvector(logs, VD);
        VD a;
        const VD l = N_(prob_row_loss_v)(p, md, ld, __builtin_convertvector(sd, VD),
                                         __builtin_convertvector(st, VD), &a);
        const VD scale = gs * a / __builtin_convertvector(s, VD);
        for (int j = 0; j < nr; j++) {
            const int64_t r = r0 + j;
            if (row_path[j]) {
                N_(xent_prob_row)(x, t, g, r, p, loss, scratch, stats);
                continue;
            }
            loss[r] = l[j];
            if (stats) fl_put_stats(stats, r, md[j], ld[j], am[j],
                                    am[j] == N_(row_argmax)(tb + j * C, C));
            const T mj = m[j];
            if (g) N_(prob_row_grad)(NULL, tb + j * C, g + r * C, C, mj, &mj, 1, scale[j], kt, add,
                                     cw, gs);
        }
    }
    for (int64_t r = 0; !mid && r < n; r++) N_(xent_prob_row)(x, t, g, r, p, loss, scratch, stats);
}

/* Row r: lse[r] = log sum exp(x_r); with out, also softmax (log_out == 0) or log-softmax
 * (log_out == 1) into out (may alias x). With shift (not NULL): shift[r] = the row max (0
 * for an all -inf row) and lse[r] the log-sum-exp relative to it (m + log s would round
 * away log s at large m). */
static void N_(softmax_row)(const T *x, T *out, int64_t r, int64_t C, int log_out, double *lse,
                            double *shift) {
    const int keep = C <= FL_MAX_CHUNKS * FL_CHUNK;
    T cm[FL_MAX_CHUNKS];
    const T *xr = x + r * C;
    T *orow = out ? out + r * C : NULL;
    T m;
    const double s = orow && !log_out && keep
                     ? N_(row_exp_chunked)(xr, orow, C, &m, cm, NULL, NULL, NULL, 0)
                     : N_(row_online)(xr, C, &m, NULL, NULL);
    if (shift) {
        shift[r] = m == -INFINITY ? 0.0 : (double)m;
        lse[r] = m > -INFINITY && m < INFINITY ? log(s) : m == -INFINITY ? -INFINITY : (double)NAN;
    } else {
        lse[r] = fl_row_lse((double)m, log(s));
    }
    if (!orow) return;
    if (log_out) {
        /* (x - m) - log s, not x - lse: that would cancel at large logits */
        const T ls = (T)log(s);
        for (int64_t k = 0; k < C; k++) orow[k] = (xr[k] - m) - ls;
    } else {
        N_(row_grad_pass)(xr, orow, C, m, cm, keep, 1.0 / s, NULL, 0, NULL, 0);
    }
}

/* softmax_row for rows [0, n): rows of at most FL_MID_C elements on the blocked row path
 * (above xent_label_mid). */
static void N_(softmax_rows)(const T *x, T *out, int64_t n, int64_t C, int log_out, double *lse,
                             double *shift) {
    const int mid = C <= FL_MID_C;
    for (int64_t r0 = 0; mid && r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        const T *xb = x + r0 * C;
        T *ob = out ? out + r0 * C : NULL;
        VI fin;
        const V m = N_(block_max)(xb, nr, C, &fin);
        int row_path[W];
        for (int j = 0; j < W; j++) row_path[j] = j >= nr || !fin[j];
        const V s = N_(block_sumexp)(xb, log_out ? NULL : ob, nr, C, m, row_path);
        const V logs = N_(vlog)(s), inv = (T)1 / s;
        for (int j = 0; j < nr; j++) {
            const int64_t r = r0 + j;
            if (row_path[j]) {
                N_(softmax_row)(x, out, r, C, log_out, lse, shift);
                continue;
            }
            if (shift) shift[r] = (double)m[j];
            lse[r] = shift ? (double)logs[j] : (double)m[j] + (double)logs[j];
            if (!ob) continue;
            const T *xr = xb + j * C;
            T *orow = ob + j * C;
            if (log_out) {
                for (int64_t k = 0; k < C; k++) orow[k] = (xr[k] - m[j]) - logs[j];
            } else {
                N_(row_grad)(NULL, orow, C, m[j], inv[j], 1, NULL, 0);
            }
        }
    }
    for (int64_t r = 0; !mid && r < n; r++) N_(softmax_row)(x, out, r, C, log_out, lse, shift);
}

/* Binary cross-entropy with logits (bce_logits_point) times w, one vector (masked_store).
 * w, pw: NULL or weights aligned with x. */
FL_INL V N_(bce_step)(const T *x, const T *t, const T *w, const T *pw, const uint8_t *m,
                      T *lout, T *g, int64_t k, int64_t nk, T gscale) {
    V l, d;
    N_(bce_logits_point)(N_(vload_n)(x + k, nk, 0), N_(vload_n)(t + k, nk, 0),
                         pw ? pw + k : NULL, nk, &l, &d, NULL, NULL);
    if (w) {
        const V wk = N_(vload_n)(w + k, nk, 0);
        l *= wk;
        d *= wk;
    }
    return N_(masked_store)(l, d * gscale, m, lout, g, k, nk, NULL);
}

/* n elements: returns sum l (float64 over FL_SUM_BLOCK pieces); the partial vector is
 * handled after the loop, so the loop's accumulator never lives across a call. */
FL_INL double N_(bce_impl)(const T *x, const T *t, const T *w, const T *pw, const uint8_t *m,
                           T *lout, T *g, int64_t n, T gscale) {
    double total = 0.0;
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        int64_t k = b;
        for (; k + W <= end; k += W) acc += N_(bce_step)(x, t, w, pw, m, lout, g, k, W, gscale);
        if (k < end) acc += N_(bce_step)(x, t, w, pw, m, lout, g, k, end - k, gscale);
        total += N_(vhsum)(acc);
    }
    return total;
}

/* Binary cross-entropy with logits over n elements (bce_step). m: NULL or n where= mask
 * bytes; lout (per-element loss) and g (gradient times gscale) are optional. The loops with
 * and without a mask or a gradient are apart, so that none carries another's work. */
static double N_(bce_block)(const T *x, const T *t, const T *w, const T *pw, const uint8_t *m,
                            T *lout, T *g, int64_t n, T gscale) {
    if (m) return g ? N_(bce_impl)(x, t, w, pw, m, lout, g, n, gscale)
                    : N_(bce_impl)(x, t, w, pw, m, lout, NULL, n, gscale);
    return g ? N_(bce_impl)(x, t, w, pw, NULL, lout, g, n, gscale)
             : N_(bce_impl)(x, t, w, pw, NULL, lout, NULL, n, gscale);
}

/* torchvision's sigmoid focal loss, one vector (masked_store):
 *   l = alpha_t * bce(x, t) * (1 - p_t)^gamma,  p_t = p t + (1 - p)(1 - t),
 *   alpha_t = alpha t + (1 - alpha)(1 - t) = a0 + a1 t (a0 = 1 - alpha, a1 = 2 alpha - 1;
 *   alpha < 0: a0 = 1, a1 = 0).
 * bce and its derivative p - t come from bce_logits_point, whose terms do not cancel;
 * 1 - p_t is formed as p (1 - t) + (1 - p) t from both sigmoids. So the loss keeps its
 * relative accuracy as p_t -> 1 (x * t - x would lose log1p(e) at large |x|). A negative
 * 1 - p_t (a target outside [0, 1]) makes (1 - p_t)^gamma NaN for gamma > 0. sq: gamma
 * is 2 (the default), whose power is a product and whose derivative 2 (1 - p_t) needs no
 * care at 1 - p_t = 0. */
FL_INL V N_(focal_step)(const int sq, const T *x, const T *t, const uint8_t *m, T *lout, T *g,
                        int64_t k, int64_t nk, T a0, T a1, T gamma, T gscale) {
    const V xk = N_(vload_n)(x + k, nk, 0), tk = N_(vload_n)(t + k, nk, 0);
    V ce, dce, p, q;                                /* p = sigmoid(x), q = sigmoid(-x) */
    N_(bce_logits_point)(xk, tk, NULL, nk, &ce, &dce, &p, &q);
    const V one_minus_pt = p * ((T)1 - tk) + q * tk;
    /* d(1-p_t)/dx = p q (1 - 2t); df/dx = gamma (1-p_t)^(gamma-1) times that */
    const V dpt = (p * q) * ((T)1 - (T)2 * tk);
    V f, df;                                        /* (1-p_t)^gamma and its derivative */
    if (sq) {
        f = N_(vsel)(one_minus_pt < (T)0, N_(vset1)((T)NAN), one_minus_pt * one_minus_pt);
        df = (one_minus_pt + one_minus_pt) * dpt;
    } else {
        f = gamma == (T)0 ? N_(vset1)(1) : N_(vexp)(gamma * N_(vlog)(one_minus_pt));
        df = N_(vsel)(one_minus_pt == (T)0, N_(vset1)(0), gamma * f / one_minus_pt * dpt);
    }
    const V at = a0 + a1 * tk;
    return N_(masked_store)(at * ce * f, at * (dce * f + ce * df) * gscale, m, lout, g, k, nk, NULL);
}

FL_INL double N_(focal_impl)(const int sq, const T *x, const T *t, const uint8_t *m, T *lout,
                             T *g, int64_t n, T a0, T a1, T gamma, T gscale) {
    double total = 0.0;
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        int64_t k = b;
        for (; k + W <= end; k += W)
            acc += N_(focal_step)(sq, x, t, m, lout, g, k, W, a0, a1, gamma, gscale);
        if (k < end) acc += N_(focal_step)(sq, x, t, m, lout, g, k, end - k, a0, a1, gamma, gscale);
        total += N_(vhsum)(acc);
    }
    return total;
}

/* The sigmoid focal loss over n elements (focal_step); m, lout, g: as bce_block's. */
static double N_(focal_block)(const T *x, const T *t, const uint8_t *m, T *lout, T *g, int64_t n,
                              T alpha, T gamma, T gscale) {
    const T a0 = alpha < (T)0 ? (T)1 : (T)1 - alpha, a1 = alpha < (T)0 ? (T)0 : (T)2 * alpha - (T)1;
#define FL_FOCAL(sq, mm, gg) N_(focal_impl)(sq, x, t, mm, lout, gg, n, a0, a1, gamma, gscale)
    if (gamma == (T)2) {
        if (m) return g ? FL_FOCAL(1, m, g) : FL_FOCAL(1, m, NULL);
        return g ? FL_FOCAL(1, NULL, g) : FL_FOCAL(1, NULL, NULL);
    }
    if (m) return g ? FL_FOCAL(0, m, g) : FL_FOCAL(0, m, NULL);
    return g ? FL_FOCAL(0, NULL, g) : FL_FOCAL(0, NULL, NULL);
#undef FL_FOCAL
}
