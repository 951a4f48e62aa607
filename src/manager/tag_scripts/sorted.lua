-- Makes sure a tag's set (KEYS[1]) is a sorted set before it is read: ARGV[1] the skew margin.
to_sorted(KEYS[1], tonumber(ARGV[1]), now_ms())
return 0
