from libs import murmur3

# Reference values from the mmh3 package (the C implementation), which other platforms'
# MurmurHash3 x86_32 agree with: an assignment computed elsewhere matches ours.
REFERENCE = [("", 0, 0), ("hello", 0, 613153351),
             ("exp-0001:layer:user-42", 0, 3583376142), ("a", 1, 1485495528),
             ("abcd", 7, 1425861819), ("abcde", 7, 3037955123), ("ünï", 3, 567737286),
             ("x" * 1000, 0xDEADBEEF, 2682541411)]


def test_matches_the_reference_implementation():
    for key, seed, expected in REFERENCE:
        assert murmur3.hash32(key, seed) == expected, (key[:20], seed)


def test_str_and_its_utf8_bytes_hash_alike():
    assert murmur3.hash32("ünï", 3) == murmur3.hash32("ünï".encode(), 3)
