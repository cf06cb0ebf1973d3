"""Everything that lives in Redis or PostgreSQL: key names, Lua scripts, the stored records, connections."""
