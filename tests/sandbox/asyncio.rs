//! asyncio without I/O: coroutines, tasks, `gather`, `sleep`, queues and timeouts run on an
//! event loop that needs no self-pipe (WASI has no sockets) and whose selector only waits out
//! timeouts, never past the execution's deadline. Expected results were recorded from
//! CPython 3.11.

use pyexec::sandbox::ErrorKind;
use serde_json::Value;

use super::{error, run};

/// (what, code, `result` under CPython 3.11).
const CASES: &[(&str, &str, &str)] = &[
    (
        "coroutines",
        r#"import asyncio
async def add(a, b):
    await asyncio.sleep(0)
    return a + b
async def main():
    return await add(1, 2) + await add(3, 4)
result = asyncio.run(main())"#,
        r#"10"#,
    ),
    (
        "gather",
        r#"import asyncio
done = []
async def work(name, delay):
    await asyncio.sleep(delay)
    done.append(name)
    return name.upper()
async def main():
    return await asyncio.gather(work('slow', 0.05), work('fast', 0.01), work('now', 0))
result = [asyncio.run(main()), done]"#,
        r#"[["SLOW", "FAST", "NOW"], ["now", "fast", "slow"]]"#,
    ),
    (
        "sleep",
        r#"import asyncio, time
async def main():
    loop = asyncio.get_running_loop()
    start, wall = loop.time(), time.monotonic()
    value = await asyncio.sleep(0.05, result='woke')
    return [value, loop.time() - start >= 0.045, time.monotonic() - wall >= 0.045]
result = asyncio.run(main())"#,
        r#"["woke", true, true]"#,
    ),
    (
        "queues",
        r#"import asyncio
async def producer(queue, n):
    for i in range(n):
        await queue.put(i)
    await queue.put(None)
async def consumer(queue):
    seen = []
    while (item := await queue.get()) is not None:
        seen.append(item)
        queue.task_done()
    return seen
async def main():
    queue = asyncio.Queue(maxsize=2)
    _, seen = await asyncio.gather(producer(queue, 10), consumer(queue))
    return seen
result = asyncio.run(main())"#,
        r#"[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"#,
    ),
    (
        "timeouts",
        r#"import asyncio
async def main():
    outcomes = []
    try:
        await asyncio.wait_for(asyncio.sleep(10), 0.02)
    except TimeoutError:
        outcomes.append('wait_for timed out')
    try:
        async with asyncio.timeout(0.02):
            await asyncio.sleep(10)
    except TimeoutError:
        outcomes.append('timeout timed out')
    outcomes.append(await asyncio.wait_for(asyncio.sleep(0, 'in time'), 1))
    return outcomes
result = asyncio.run(main())"#,
        r#"["wait_for timed out", "timeout timed out", "in time"]"#,
    ),
    (
        "tasks, events and locks",
        r#"import asyncio
async def main():
    event, lock, order = asyncio.Event(), asyncio.Lock(), []
    async def waiter(n):
        await event.wait()
        async with lock:
            order.append(n)
    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    event.set()
    await asyncio.wait(tasks)
    task = asyncio.ensure_future(asyncio.sleep(10))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        order.append('cancelled')
    return order
result = asyncio.run(main())"#,
        r#"[0, 1, 2, "cancelled"]"#,
    ),
    (
        "a loop of one's own",
        r#"import asyncio
loop = asyncio.new_event_loop()
try:
    result = loop.run_until_complete(asyncio.sleep(0.01, 'ran'))
finally:
    loop.close()
result = [result, loop.is_closed()]"#,
        r#"["ran", true]"#,
    ),
];

#[tokio::test]
async fn coroutines_gather_sleep_queues_and_timeouts_work_as_in_cpython() {
    for (what, code, expected) in CASES {
        let expected: Value = serde_json::from_str(expected).unwrap();
        let outcome = run(code).await;
        let got = match &outcome.result {
            Ok(raw) => serde_json::from_str::<Value>(raw.get()).unwrap(),
            Err(err) => panic!("{what}: {err:#?}\nstderr: {}", outcome.stderr),
        };
        assert_eq!(got, expected, "{what}");
    }
}

#[tokio::test]
async fn an_asyncio_sleep_past_the_deadline_is_a_timeout() {
    let outcome = run("import asyncio\nasyncio.run(asyncio.sleep(60))").await;
    assert_eq!(error(&outcome).kind, ErrorKind::Timeout);
    // A future nobody resolves waits like CPython's, until the deadline.
    let outcome =
        run("import asyncio\nasync def main():\n    await asyncio.get_running_loop().create_future()\nasyncio.run(main())")
            .await;
    assert_eq!(error(&outcome).kind, ErrorKind::Timeout);
}

#[tokio::test]
async fn asyncio_io_fails_as_a_python_exception() {
    let code = "import asyncio
async def main():
    try:
        asyncio.get_running_loop().add_reader(0, print)
    except OSError:
        return 'refused'
result = asyncio.run(main())";
    assert_eq!(super::result(&run(code).await), "refused");
    let outcome = run(
        "import asyncio\nasync def main():\n    await asyncio.open_connection('127.0.0.1', 80)\nasyncio.run(main())",
    )
    .await;
    assert_eq!(error(&outcome).kind, ErrorKind::PythonException);
}
