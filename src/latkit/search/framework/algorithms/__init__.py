"""Query-based search algorithms; each registers itself with latkit.search.framework.base."""
