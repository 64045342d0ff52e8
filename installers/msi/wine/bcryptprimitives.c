/*
 * Test shim for wine 8 (Debian 12) only, never shipped in the MSI: Rust's
 * standard library (1.78+) takes its randomness from ProcessPrng in
 * bcryptprimitives.dll, which Windows 10+ has and wine 8 does not, so
 * picket-agent.exe would not load under wine. This DLL provides ProcessPrng
 * on top of wine's BCryptGenRandom (the system RNG). build.sh compiles it with
 * mingw-w64 and puts it in the wine prefix's system32.
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
