import { z } from 'zod';
import type { MessageSchemaRule } from '@fluxguard/core';

const SERVICE = '/fluxguard.example.v1.ArtifactStore';

// A coarse shape: the path resolver does the fine checks (characters, `..`, length 1,024).
const path = z.string().max(4096);

/**
 * The shape of every ArtifactStore request message (zod, through Standard Schema), checked
 * before a handler reads it: `createMessageValidation({ rules: ARTIFACT_MESSAGE_RULES })`.
 */
export const ARTIFACT_MESSAGE_RULES: readonly MessageSchemaRule[] = Object.freeze([
  { operation: `${SERVICE}/GetArtifact`, schema: z.object({ path }) },
  { operation: `${SERVICE}/DeleteArtifact`, schema: z.object({ path }) },
  { operation: `${SERVICE}/ListArtifacts`, schema: z.object({ prefix: path, start_after: path }) },
  {
    operation: `${SERVICE}/ImportArtifact`,
    schema: z.object({
      path,
      url: z.string().max(2048),
      sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex digits'),
    }),
  },
]);

/** The JSON body of `POST /v1/artifacts/{path}:import`: where from, and the SHA-256 it must have. */
export const IMPORT_BODY = z.strictObject({
  url: z.string().max(2048),
  sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex digits'),
});

/**
 * The query of `GET /v1/artifacts`: at most one `prefix` and one `startAfter` (a repeated one
 * arrives as an array and is refused). For `validate({ query: LIST_QUERY })` of `@fluxguard/express`.
 */
export const LIST_QUERY = z.object({ prefix: path.optional(), startAfter: path.optional() });
