/* One (dtype, SIMD level) instantiation, included by fl_instantiate.h: the vector
 * layer, the family's template body FL_BODY and, where a family header defines
 * it, a second body FL_BODY2 compiled alongside; then the per-instantiation
 * macros are undefined. */
#include "fl_vec.h"
#include FL_BODY
#ifdef FL_BODY2
#include FL_BODY2
#endif
#include "fl_undef.h"
