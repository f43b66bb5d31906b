/** Thrown by WorkQueue.run when every slot is busy and the queue is full: the caller should answer "retry later" at once. */
export class QueueFullError extends Error {
  constructor () {
    super('The work queue is full')
    this.name = 'QueueFullError'
  }
}

export interface WorkQueueOptions {
  /** Tasks running at once. */
  concurrency: number
  /** Tasks allowed to wait for a slot; one more is refused with QueueFullError. */
  maxQueued: number
}

/**
 * Runs async tasks at most `concurrency` at a time, first come first served,
 * with a bounded waiting line. Refusing work beyond the bound keeps a flood
 * from growing an unbounded backlog that every later request would wait behind.
 */
export class WorkQueue {
  readonly concurrency: number
  readonly maxQueued: number
  #running = 0
  readonly #waiting: Array<() => void> = []

  constructor ({ concurrency, maxQueued }: WorkQueueOptions) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError('concurrency must be a positive integer')
    if (!Number.isInteger(maxQueued) || maxQueued < 0) throw new RangeError('maxQueued must be a non-negative integer')
    this.concurrency = concurrency
    this.maxQueued = maxQueued
  }

  get running (): number {
    return this.#running
  }

  get queued (): number {
    return this.#waiting.length
  }

  async run<T> (task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.concurrency) {
      if (this.#waiting.length >= this.maxQueued) throw new QueueFullError()
      // The slot is handed over by the finishing task, so #running stays counted.
      await new Promise<void>((resolve) => this.#waiting.push(resolve))
    } else {
      this.#running += 1
    }
    try {
      return await task()
    } finally {
      const next = this.#waiting.shift()
      if (next !== undefined) next()
      else this.#running -= 1
    }
  }
}
