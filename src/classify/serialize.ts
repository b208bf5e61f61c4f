/**
 * @module
 * A FIFO lock for async work: at most one task runs at a time, the others wait in arrival order.
 * A failing task releases the lock like a succeeding one.
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
