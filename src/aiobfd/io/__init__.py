"""The asyncio side of aiobfd: sockets and the loop that drives the sans-IO core."""
