/* fp16 conversions (src/half.c) against the compiler's _Float16, exhaustive
 * for half -> float and for every 61st float bit pattern the other way. */
#include "check.h"
#include "internal.h"

#include <string.h>

int main(void)
{
    uint32_t bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 ref;
        uint16_t bits = (uint16_t)h;
        memcpy(&ref, &bits, 2);
        float got = fasa__half_to_float(bits), want = (float)ref;
        if (memcmp(&got, &want, 4) != 0 && !(got != got && want != want)) bad++;
    }
    CHECK(bad == 0, "%u half values convert wrongly", bad);
    bad = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 61) {
        uint32_t v = (uint32_t)u;
        float f;
        memcpy(&f, &v, 4);
        _Float16 ref = (_Float16)f;
        uint16_t want;
        memcpy(&want, &ref, 2);
        uint16_t got = fasa__float_to_half(f);
        if (f != f) bad += (got & 0x7c00u) != 0x7c00u || (got & 0x3ffu) == 0; /* NaN stays NaN */
        else bad += got != want;
    }
    CHECK(bad == 0, "%u float values round wrongly", bad);
    return check_done("test_half");
}
