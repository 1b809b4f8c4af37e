"""The search framework: problem, query accounting, results, policies and the query-based algorithms."""
