import { pino } from 'pino';
import { createAuditLogger } from '@fluxguard/core';

export const logger = pino({ base: { service: 'orders' } });
export const audit = createAuditLogger({ logger }); // fluxguard's lines carry service: 'orders' too
