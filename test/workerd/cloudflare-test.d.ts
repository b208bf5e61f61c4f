/**
 * @module
 * Types of the `cloudflare:test` module for the workerd test project.
 */
/// <reference types="@cloudflare/vitest-pool-workers/types" />
