##! Plays the sidecar inside Zeek for the tests: says hello at start-up and
##! answers every request with a fixed verdict chosen by the responder port,
##! raised locally as if it had arrived from the WebSocket endpoint.

module FakeSidecar;

export {
	## A verdict's fields other than the uid and model.
	type Answer: record {
		label: string;
		attack: string;
		score: double;
		explanation: string;
	};

	## Verdict per responder port of the test capture.
	global answers: table[port] of Answer = {
		[22/tcp] = Answer($label="bruteforce", $attack="dictionary_attack",
		    $score=0.97, $explanation="many short logins"),
		[0/icmp] = Answer($label="bruteforce", $attack="dictionary_attack",
		    $score=0.95, $explanation="same originator again"),
		[53/udp] = Answer($label="bruteforce", $attack="dictionary_attack",
		    $score=0.40, $explanation="below every threshold"),
		[80/tcp] = Answer($label="recon", $attack="port_scan", $score=0.91,
		    $explanation="a lone SYN"),
		[2000/udp] = Answer($label="error", $attack="error", $score=0.0,
		    $explanation="model failed: test"),
		[4000/udp] = Answer($label="benign", $attack="benign", $score=0.99,
		    $explanation="one datagram"),
	};
}

event zeek_init()
	{
	event PacketCLIP::hello("btest-sidecar", "btest-model");
	}

hook PacketCLIP::request_policy(topic: string, req: PacketCLIP::Request)
	{
	local a = answers[req$resp_p];

	# a sidecar scoring user-written missions sends their scores first
	if ( req$resp_p == 80/tcp )
		event PacketCLIP::mission_scores(req$uid, vector("ntp_flood", "web_probe"),
		    vector(0.1, 0.93));

	event PacketCLIP::verdict(req$uid, a$label, a$attack, a$score, a$explanation,
	    "btest-model");
	}
