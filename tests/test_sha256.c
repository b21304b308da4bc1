/* src/sha256.c against the FIPS 180-2 test vectors (Appendix B: "abc",
 * the 448-bit two-block message, one million 'a'), the empty message, and
 * the same digests fed in pieces of 1 to 130 bytes (which crosses the
 * partial-block and padding boundaries; a few sizes for the long message). */
#include "check.h"
#include "sha256.h"

#include <stdlib.h>
#include <string.h>

static void hex(const uint8_t d[FASA_SHA256_SIZE], char out[2 * FASA_SHA256_SIZE + 1])
{
    for (int i = 0; i < FASA_SHA256_SIZE; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void expect(const char *name, const uint8_t *msg, size_t n, const char *want)
{
    uint8_t d[FASA_SHA256_SIZE];
    char got[2 * FASA_SHA256_SIZE + 1];
    fasa__sha256(msg, n, d);
    hex(d, got);
    CHECK(strcmp(got, want) == 0, "%s: one call gives %s, want %s", name, got, want);
    for (size_t piece = 1; piece <= 130 && piece <= n; piece++) {
        if (n > 1000 && piece != 1 && piece != 7 && (piece < 63 || piece > 65) && piece != 129) continue;
        fasa__sha256_ctx s;
        fasa__sha256_init(&s);
        for (size_t at = 0; at < n; at += piece) fasa__sha256_update(&s, msg + at, n - at < piece ? n - at : piece);
        fasa__sha256_final(&s, d);
        hex(d, got);
        CHECK(strcmp(got, want) == 0, "%s: pieces of %zu give %s", name, piece, got);
    }
}

int main(void)
{
    const char *abc = "abc", *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect("FIPS 180-2 B.1 (abc)", (const uint8_t *)abc, 3,
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect("FIPS 180-2 B.2 (448 bits)", (const uint8_t *)two, strlen(two),
           "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    expect("empty message", (const uint8_t *)"", 0,
           "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    size_t million = 1000000;
    uint8_t *a = malloc(million);
    if (!a) return 1;
    memset(a, 'a', million);
    expect("FIPS 180-2 B.3 (one million 'a')", a, million,
           "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* 55, 56 and 64 bytes: the length field fits / just misses / a whole block */
    uint8_t d[FASA_SHA256_SIZE];
    char got[2 * FASA_SHA256_SIZE + 1];
    const char *want[3] = {"9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318",
                           "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a",
                           "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"};
    size_t lens[3] = {55, 56, 64};
    for (int i = 0; i < 3; i++) {
        fasa__sha256(a, lens[i], d);
        hex(d, got);
        CHECK(strcmp(got, want[i]) == 0, "%zu x 'a': %s, want %s", lens[i], got, want[i]);
    }
    free(a);
    return check_done("test_sha256");
}
