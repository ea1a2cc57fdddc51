"""Cost of exporting one source when the store holds N other sources' chat histories (Redis)."""
import asyncio, subprocess, socket, time, sys, statistics, uuid, shutil, tempfile
from wxhelper.storage import open_store
from wxhelper.storage.base import HistoryKey
from wxhelper.messages import Record
def free():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
port=free(); d=tempfile.mkdtemp()
rs=subprocess.Popen(["redis-server","--port",str(port),"--save","","--appendonly","no","--dir",d],stdout=subprocess.DEVNULL)
time.sleep(0.5)
async def main(n):
    store=open_store(f"redis://127.0.0.1:{port}/0?prefix=x{uuid.uuid4().hex[:6]}:")
    now=time.time()
    for i in range(n):
        key=HistoryKey.chat("car", f"g{i}", "bot")
        await store.append_many(key, [Record(user_id=f"u{j}", source_id=f"g{i}", bot_id="bot", content="你好"*20, timestamp=now+j, message_id=f"{i}-{j}") for j in range(5)], max_per_user=10, ttl=86400)
    board=HistoryKey.shared("namespace","car")
    await store.append_many(board, [Record(user_id=f"u{j}", source_id=f"g{j%n}", bot_id="bot", content="13800138000 卖车", timestamp=now+j, message_id=f"b{j}") for j in range(100)], max_per_user=10, ttl=86400)
    keep=lambda k: k.kind!="chat" or k.source_id=="g7"
    res={"all then filter":[], "keep":[]}
    for rep in range(5):
        t=time.perf_counter(); rows=[(k,r) async for k,rs_ in store.iter_all() if keep(k) for r in rs_ if r.source_id=="g7"]; res["all then filter"].append(time.perf_counter()-t)
        t=time.perf_counter(); rows2=[(k,r) async for k,rs_ in store.iter_all(keep) for r in rs_ if r.source_id=="g7"]; res["keep"].append(time.perf_counter()-t)
        assert rows==rows2, (len(rows), len(rows2))
    print(n, "histories:", {k: f"{statistics.median(v)*1000:.1f} ms" for k,v in res.items()}, "rows", len(rows))
    await store.close()
for n in (1000, 10000):
    asyncio.run(main(n))
rs.terminate()
