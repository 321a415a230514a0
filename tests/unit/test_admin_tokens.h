/* test_admin_tokens.h — the bearer tokens of the tests that call admin
 * API and /v1/stats handlers: an --admin-tokens file whose hashes are the
 * SHA-256 test vectors of FIPS 180-2 (B.1 "abc", B.2 the 448-bit
 * message), so the tokens are those messages. */
#ifndef TEST_ADMIN_TOKENS_H
#define TEST_ADMIN_TOKENS_H

#define ADMIN_TOKEN "abc"
#define READ_TOKEN "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
static const char TOKENS[] =
    "root admin ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    "viewer read 248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1\n";

#endif
