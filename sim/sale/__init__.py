"""Flash sales, lotteries and chat: contention driven by each viewer's replay latency."""
