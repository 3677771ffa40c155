##! Example log policy: keep low-confidence verdicts out of packetclip.log.
##!
##! Rows whose score is below :zeek:see:`PacketCLIPExamples::min_logged_score`
##! are dropped; ``error`` rows are always kept, since they say a connection
##! went unclassified. Notices are not affected: they have thresholds of their
##! own (:zeek:see:`PacketCLIP::notice_thresholds`).

module PacketCLIPExamples;

export {
	## Lowest score written to packetclip.log.
	option min_logged_score = 0.5;
}

hook PacketCLIP::log_policy(rec: PacketCLIP::Info, id: Log::ID,
    filter: Log::Filter)
	{
	if ( rec$label != "error" && rec$score < min_logged_score )
		break;
	}
