/**
 * @module
 * A FIFO lock for async work: at most one task runs at a time, the others wait in arrival order.
 * A failing task releases the lock like a succeeding one. And {@link nextTask}, a yield to the
 * event loop between long synchronous computations.
 */

/**
 * Returns a runner that executes tasks one after another.
 *
 * @example
 * const exclusive = serialize();
 * const [a, b] = await Promise.all([exclusive(() => decode(x)), exclusive(() => decode(y))]);
 */
export function serialize(): <T>(task: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>): Promise<T> => {
    const run = tail.then(task, task);
    tail = run.catch(() => undefined);
    return run;
  };
}

/**
 * Resolves on a later turn of the event loop (a zero-delay timer, not a microtask), so the
 * runtime polls its sockets before the caller goes on. workerd runs every Worker of a process on
 * one thread and polls I/O only when its queue of ready work is empty; back-to-back model runs
 * (0.1-1 s each, synchronous inside wasm) kept it from polling for seconds, and it then closed
 * kept-alive connections whose next request it had not read yet (its 5 s pipeline timeout,
 * measured against a clock that had not been updated since the last poll).
 *
 * @example
 * await nextTask(); // let pending I/O in before the next synchronous session.run
 */
export function nextTask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
