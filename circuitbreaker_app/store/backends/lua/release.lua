-- Free a permit only if it still holds the caller's token (a late holder frees nothing).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
